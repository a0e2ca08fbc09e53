"""The performance table every selector learns from: tasks × candidates, plus features.

A table comes from stored profile records, a long-format CSV or an ASlib scenario
(advisor.external). Unavailable cells (not applicable, failed, not measured, below the
quality floor) are NaN: no selector may choose them and no metric counts them.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from advisor.features import (
    BASELINE,
    FeatureSchema,
    candidate_features,
    candidate_key,
    fit_schema,
    task_features,
    task_key,
    to_matrix,
)

# How a cell's raw value turns into "utility" (higher is better) and into the loss the gap is
# measured on: ratio = speed-up-like (loss = best/chosen), cost = runtime-like, lower is better
# (loss = chosen value, e.g. PAR10), score = any other measure (loss = |best − chosen|).
MEASURES = ("ratio", "cost", "score")
OBJECTIVES = ("latency", "throughput", "memory", "time-to-accuracy")
# A record the protocol flagged noisy (its per-round ratios still scattered after a re-measure)
# counts this much beside a clean one of another cell; a cell with clean records ignores its noisy ones.
NOISY_WEIGHT = 0.3
EXTRAS = ("quality_delta", "log_speedup", "log_throughput_ratio", "log_memory_ratio", "log_baseline_latency")


@dataclass(frozen=True)
class PerfTable:
    name: str
    tasks: tuple[str, ...]
    task_x: np.ndarray  # n_tasks × n_features, NaN = missing
    feature_names: tuple[str, ...]
    candidates: tuple[str, ...]
    cand_x: np.ndarray  # n_candidates × n_candidate_features
    cand_feature_names: tuple[str, ...]
    values: np.ndarray  # n_tasks × n_candidates raw measure, NaN = unavailable
    measure: str = "ratio"
    higher_is_better: bool = True
    groups: Mapping[str, np.ndarray] = field(default_factory=dict)  # split name → group per task
    folds: np.ndarray | None = None  # a scenario's own CV fold per task
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)  # other n_tasks × n_candidates targets
    task_schema: FeatureSchema | None = None  # set for profile tables: recommendation re-encodes with it
    cand_schema: FeatureSchema | None = None
    weights: np.ndarray | None = None  # n_tasks × n_candidates learning weight (None: all 1)

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"measure {self.measure!r} is not one of {MEASURES}")
        if self.values.shape != (len(self.tasks), len(self.candidates)):
            raise ValueError(f"values shape {self.values.shape} != tasks × candidates")
        if not self.available.any(axis=1).all():
            raise ValueError("every task needs at least one available candidate")

    @property
    def available(self) -> np.ndarray:
        return ~np.isnan(self.values)

    @property
    def utility(self) -> np.ndarray:
        """Higher is better; logs for ratio/cost measures so learners see multiplicative effects additively."""
        if self.measure in ("ratio", "cost"):
            with np.errstate(divide="ignore", invalid="ignore"):
                logged = np.log(np.maximum(self.values, 1e-12))
            return logged if self.higher_is_better else -logged
        return self.values if self.higher_is_better else -self.values

    def subset(self, rows: np.ndarray) -> PerfTable:
        return replace(
            self,
            tasks=tuple(self.tasks[i] for i in rows),
            task_x=self.task_x[rows],
            values=self.values[rows],
            groups={k: v[rows] for k, v in self.groups.items()},
            folds=None if self.folds is None else self.folds[rows],
            extras={k: v[rows] for k, v in self.extras.items()},
            weights=None if self.weights is None else self.weights[rows],
        )


def objective_value(record: Mapping, objective: str) -> float | None:
    """The ratio "method vs baseline" (higher is better) a record contributes for an objective."""
    if objective in ("latency", "time-to-accuracy"):
        return record.get("speedup")
    if objective == "throughput":
        got, base = record.get("throughput"), record.get("baseline_throughput")
        return got / base if got and base else record.get("speedup")
    if objective == "memory":
        got, base = record.get("peak_mem_mb"), record.get("baseline_peak_mem_mb")
        return base / got if got and base else None
    raise ValueError(f"objective {objective!r} is not one of {OBJECTIVES}")


def table_from_records(
    records: Iterable[Mapping],
    objective: str = "latency",
    quality_floor: float | None = None,
    name: str = "profiles",
    text_embedding: bool = False,
) -> PerfTable:
    """One row per task, one column per (method, config) seen, plus the implicit baseline.

    Several measurements of the same cell (e.g. nodes of one hardware class) are combined by
    the median. A method with any not-applicable/failed run on a task, or a median quality
    change below ``quality_floor``, is unavailable there. ``text_embedding`` adds the projected
    MiniLM embedding of each task's free-text description (advisor.embedding).
    """
    cells: dict[tuple[str, str, bool], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    blocked: set[tuple[str, str]] = set()
    task_rows: dict[str, dict] = {}
    groups: dict[str, dict[str, str]] = {}
    candidate_rows: dict[str, dict] = {BASELINE: candidate_features(BASELINE, None)}
    for record in records:
        task = task_key(record)
        if task not in task_rows:
            task_rows[task] = task_features(record)
            if text_embedding:
                from advisor.embedding import task_description, text_features

                task_rows[task].update(text_features(task_description(record)))
            groups[task] = {"model": record["model_id"], "hardware": record["hardware_class"], "random": task}
        if record["method_id"] == BASELINE:
            continue  # measured baselines (speed-up 1 by definition) are the implicit candidate already
        cand = candidate_key(record["method_id"], record.get("config"))
        candidate_rows.setdefault(cand, candidate_features(record["method_id"], record.get("config")))
        if record["status"] != "ok":
            blocked.add((task, cand))
            continue
        metrics = record.get("metrics") or {}
        _add_figures(cells[(task, cand, bool(metrics.get("noisy")))], record, metrics, objective)
    if not task_rows:
        raise ValueError("no profile records to learn from")
    tasks = tuple(sorted(task_rows))
    candidates = tuple(sorted(candidate_rows, key=lambda c: (c != BASELINE, c)))
    t_index = {t: i for i, t in enumerate(tasks)}
    c_index = {c: j for j, c in enumerate(candidates)}
    shape = (len(tasks), len(candidates))
    values = np.full(shape, np.nan)
    extras = {key: np.full(shape, np.nan) for key in EXTRAS}
    values[:, 0] = 1.0
    for key in EXTRAS[:-1]:  # the baseline changes nothing: zero log ratios, zero quality change
        extras[key][:, 0] = 0.0
    weights = np.ones(shape)
    for (task, cand, noisy), cell in cells.items():
        if noisy and (task, cand, False) in cells:
            continue  # clean measurements of this cell exist: the noisy ones add nothing
        i, j = t_index[task], c_index[cand]
        weights[i, j] = NOISY_WEIGHT if noisy else 1.0
        for key, figures in cell.items():
            target = values if key == "value" else extras[key]
            target[i, j] = statistics.median(figures)  # numpy's median costs ~60 µs a call on tiny lists
    for task, cand in blocked:
        values[t_index[task], c_index[cand]] = np.nan
    if quality_floor is not None:
        values[extras["quality_delta"] < quality_floor] = np.nan
    task_schema = fit_schema(task_rows.values())
    cand_schema = fit_schema(candidate_rows.values())
    return PerfTable(
        name=name,
        tasks=tasks,
        task_x=to_matrix((task_rows[t] for t in tasks), task_schema),
        feature_names=tuple(task_schema.columns),
        candidates=candidates,
        cand_x=to_matrix((candidate_rows[c] for c in candidates), cand_schema),
        cand_feature_names=tuple(cand_schema.columns),
        values=values,
        measure="ratio",
        groups={split: np.array([groups[t][split] for t in tasks]) for split in ("model", "hardware", "random")},
        extras=extras,
        task_schema=task_schema,
        cand_schema=cand_schema,
        weights=weights,
    )


# The record fields `_add_figures` (and the status filter) learn from: what identifies a snapshot's content.
LEARNED_FIELDS = ("status", "speedup", "quality_delta", "throughput", "baseline_throughput", "peak_mem_mb",
                  "baseline_peak_mem_mb", "baseline_latency_p50_s")  # fmt: skip


def learned_figures(record: Mapping) -> tuple:
    """The run id and every figure of a record the advisor learns from."""
    informative = (record.get("metrics") or {}).get("quality_informative")
    return (record["run_id"], *(record.get(k) for k in LEARNED_FIELDS), informative)


def _add_figures(cell: dict[str, list[float]], record: Mapping, metrics: Mapping, objective: str) -> None:
    value = objective_value(record, objective)
    if value is not None and value > 0:
        cell["value"].append(value)
    # A quality figure whose reference sits at the metric's floor cannot show a loss: unknown, not "no loss".
    informative = metrics.get("quality_informative", True) is not False
    for key, figure in (
        ("quality_delta", record.get("quality_delta") if informative else None),
        ("log_speedup", _log_or_none(record.get("speedup"))),
        ("log_throughput_ratio", _log_or_none(objective_value(record, "throughput"))),
        ("log_memory_ratio", _log_or_none(objective_value(record, "memory"))),
        ("log_baseline_latency", _log_or_none(record.get("baseline_latency_p50_s"))),
    ):
        if figure is not None:
            cell[key].append(figure)


def _log_or_none(value) -> float | None:
    return math.log(value) if value and value > 0 else None
