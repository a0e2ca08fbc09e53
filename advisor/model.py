"""The trained advisor: one meta-learner per predicted figure, saved as LightGBM text + JSON.

Figures (all per (task, candidate), relative to the un-accelerated baseline of the same run):
log speed-up and quality change with 10–90 % quantile intervals, log throughput and memory
ratios, and the baseline's log latency (so a budget can be checked as runtime × price).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from advisor.facts import measured_cells, method_kinds, size_support, task_kinds, zero_shot
from advisor.features import (
    BASELINE,
    FEATURE_SCHEMA_VERSION,
    FeatureSchema,
    candidate_features,
    candidate_key,
    to_matrix,
)
from advisor.learner import MetaLearner
from advisor.table import PerfTable, learned_figures, table_from_records

INTERVAL = (0.1, 0.9)
FIGURES = {  # figure → (extras target, quantiles)
    "log_speedup": ("log_speedup", INTERVAL),
    "quality_delta": ("quality_delta", INTERVAL),
    "log_throughput_ratio": ("log_throughput_ratio", ()),
    "log_memory_ratio": ("log_memory_ratio", INTERVAL),
    "log_baseline_latency": ("log_baseline_latency", ()),
}
SIZES = {"full": 300, "small": 80}  # boosting rounds of each point model
LEARNING_RATE = 0.1  # 300 rounds at 0.1 measured as good as 600 at 0.05 on the seed grid, in half the time
# The quantile models take half the rounds: the conformal offset (advisor.intervals) calibrates their
# coverage whatever their fit, and they were 6 of the 11 boosters a retrain fits.
QUANTILE_ROUNDS = {size: rounds // 2 for size, rounds in SIZES.items()}


@dataclass(frozen=True)
class Candidate:
    method_id: str
    config: Mapping

    @cached_property
    def key(self) -> str:  # computed once: the recommendation path reads it for every candidate
        return candidate_key(self.method_id, self.config)


def data_hash(records: Sequence[Mapping], params: Mapping) -> str:
    """Identifies the training snapshot: the same records (run ids and the figures learned from) and
    parameters give the same hash, which keys the predictions kept in memory (advisor.recommend).
    A record measured again under its run id (a re-measured cell, a merged part) changes it."""
    digest = hashlib.sha256(json.dumps([dict(params), FEATURE_SCHEMA_VERSION]).encode())
    for record in sorted(records, key=lambda r: r["run_id"]):
        digest.update(repr(learned_figures(record)).encode())  # repr: floats exactly, and fast
    return digest.hexdigest()


@dataclass(frozen=True)
class AdvisorModel:
    task_schema: FeatureSchema
    cand_schema: FeatureSchema
    candidates: tuple[Candidate, ...]
    learners: Mapping[str, MetaLearner]
    n_profiles: int
    params: Mapping
    # hardware class → methods that only ever recorded "not-applicable" there: never recommended on it
    inapplicable: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # measured cells, zero-shot figures per kind, method kinds, size support, interval calibration (advisor.facts)
    facts: Mapping = field(default_factory=dict)

    def task_matrix(self, tasks: Sequence[Mapping]) -> np.ndarray:
        return to_matrix(tasks, self.task_schema)

    def candidate_matrix(self, candidates: Sequence[Candidate]) -> np.ndarray:
        return to_matrix([candidate_features(c.method_id, c.config) for c in candidates], self.cand_schema)

    def predict(self, figure: str, task_x: np.ndarray, cand_x: np.ndarray, which: str = "point") -> np.ndarray:
        return self.learners[figure].predict(task_x, cand_x, which)

    def feature_names(self) -> list[str]:
        return self.task_schema.columns + self.cand_schema.columns

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, Any] = {
            "feature_schema_version": FEATURE_SCHEMA_VERSION,
            "task_schema": self.task_schema.to_json(),
            "cand_schema": self.cand_schema.to_json(),
            "n_profiles": self.n_profiles,
            "params": dict(self.params),
            "learners": {},
            "inapplicable": {k: list(v) for k, v in self.inapplicable.items()},
            "candidates": [{"method_id": c.method_id, "config": dict(c.config)} for c in self.candidates],
        }
        for figure, learner in self.learners.items():
            files = {}
            for which, text in learner.model_texts().items():
                files[which] = f"{figure}.{which}.txt"
                (directory / files[which]).write_text(text)
            manifest["learners"][figure] = files
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        (directory / "facts.json").write_text(json.dumps(self.facts, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> AdvisorModel:
        manifest = json.loads((directory / "manifest.json").read_text())
        learners = {
            figure: MetaLearner.from_texts({w: (directory / f).read_text() for w, f in files.items()})
            for figure, files in manifest["learners"].items()
        }
        return cls(
            FeatureSchema.from_json(manifest["task_schema"]),
            FeatureSchema.from_json(manifest["cand_schema"]),
            tuple(Candidate(c["method_id"], c["config"]) for c in manifest["candidates"]),
            learners,
            manifest["n_profiles"],
            manifest["params"],
            {k: tuple(v) for k, v in manifest["inapplicable"].items()},
            json.loads((directory / "facts.json").read_text()) if (directory / "facts.json").exists() else {},
        )


def fit_advisor(
    records: Sequence[Mapping],
    size: str = "full",
    seed: int = 0,
    text_embedding: bool = False,
    calibration: Mapping | None = None,
) -> tuple[AdvisorModel, PerfTable]:
    """``calibration``: figure → regime → offset that widens the quantile interval (advisor.intervals)."""
    table = table_from_records(records, objective="latency", text_embedding=text_embedding)
    if table.task_schema is None or table.cand_schema is None:
        raise ValueError("a table built from profile records carries its feature schemas")
    learners = {}
    for figure, (target, quantiles) in FIGURES.items():
        if np.isnan(table.extras[target]).all():
            continue  # e.g. no run reported memory: that figure is simply not predicted
        learners[figure] = MetaLearner(
            target=target,
            relative=False,
            quantiles=quantiles,
            n_estimators=SIZES[size],
            quantile_rounds=QUANTILE_ROUNDS[size],
            learning_rate=LEARNING_RATE,
            seed=seed,
        ).fit(table)
    seen: dict[str, Candidate] = {}
    for record in (r for r in records if r["method_id"] != BASELINE):
        candidate = Candidate(record["method_id"], record.get("config") or {})
        seen.setdefault(candidate.key, candidate)
    params = {"size": size, "seed": seed, "text_embedding": text_embedding}
    sizes = [r["model"]["params"] for r in records if r["model"].get("params")]
    # Recommendations for models outside this range extrapolate (docs/advisor.md): they say so.
    profiled = {"model_params_range": [min(sizes), max(sizes)]} if sizes else {}
    model = AdvisorModel(
        table.task_schema,
        table.cand_schema,
        tuple(seen[k] for k in sorted(seen)),
        learners,
        len(records),
        params | profiled | {"data_hash": data_hash(records, params)},
        inapplicable_by_class(records),
        {
            "measured": measured_cells(records, table),
            "zero_shot": zero_shot(table, task_kinds(records)),
            "kinds": method_kinds(records),
            "support": size_support(records),
            "hardware_classes": sorted({r["hardware_class"] for r in records}),
            "models": sorted({r["model_id"] for r in records if r["status"] == "ok"}),
            "calibration": dict(calibration or {}),
        },
    )
    return model, table


def inapplicable_by_class(records: Sequence[Mapping]) -> dict[str, tuple[str, ...]]:
    statuses: dict[tuple[str, str], set[str]] = {}
    for record in records:
        statuses.setdefault((record["hardware_class"], record["method_id"]), set()).add(record["status"])
    out: dict[str, list[str]] = {}
    for (hardware_class, method), seen in sorted(statuses.items()):
        if seen == {"not-applicable"}:
            out.setdefault(hardware_class, []).append(method)
    return {k: tuple(v) for k, v in out.items()}
