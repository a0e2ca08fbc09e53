"""Feature extraction: pure functions from profile records to named numeric features.

Strings become one-hot columns and sizes are log2-scaled, so one schema serves every learner
(trees and distance-based baselines alike). The schema (column names) is fitted on training
data and stored with each trained artefact together with FEATURE_SCHEMA_VERSION; a change to
how any feature is computed must bump that version.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from profiles.models import canonical_json

FEATURE_SCHEMA_VERSION = 1
BASELINE = "baseline"  # the implicit candidate "apply nothing": speed-up 1, quality change 0

Value = float | str | None
MODEL_SIZES = ("params", "layers", "width", "heads", "kv_heads", "vocab", "context")
WORKLOAD_SIZES = ("batch_size", "prompt_len", "gen_len", "image_size", "steps")
NODE_SIZES = (
    "cores",
    "threads",
    "ram_gb",
    "gpu_count",
    "gpu_mem_gb",
    "mem_bw_gbs",
    "fp32_gflops",
    "bf16_gflops",
    "price_per_hour",
)


def task_key(record: Mapping) -> str:
    """A task is (model, workload, hardware class): what the advisor chooses a method for."""
    return "|".join((record["model_id"], record["workload_id"], record["hardware_class"]))


def candidate_key(method_id: str, config: Mapping | None) -> str:
    return method_id if not config else f"{method_id}{canonical_json(config)}"


def _log2_size(value) -> float | None:
    # Sizes span orders of magnitude; log2(1+x) keeps them comparable for distance-based baselines.
    if value is None or isinstance(value, bool):
        return None
    return math.log2(1.0 + max(float(value), 0.0))


def _numeric_items(prefix: str, values: Mapping | None) -> dict[str, Value]:
    """Numeric scalars (bools as 0/1) and short strings of a free-form dict, one level deep."""
    out: dict[str, Value] = {}
    for key, value in (values or {}).items():
        if isinstance(value, bool) or isinstance(value, (int, float)) and math.isfinite(value):
            out[f"{prefix}.{key}"] = float(value)
    return out


def model_features(model: Mapping) -> dict[str, Value]:
    out: dict[str, Value] = {"model.family": model.get("family")}
    out.update({f"model.{k}": _log2_size(model.get(k)) for k in MODEL_SIZES})
    heads, kv_heads = model.get("heads"), model.get("kv_heads")
    out["model.gqa_ratio"] = heads / kv_heads if heads and kv_heads else None
    out.update(_numeric_items("model.d", model.get("descriptors")))
    return out


def workload_features(workload: Mapping) -> dict[str, Value]:
    out: dict[str, Value] = {f"workload.{k}": workload.get(k) for k in ("kind", "sampling", "objective")}
    out.update({f"workload.{k}": _log2_size(workload.get(k)) for k in WORKLOAD_SIZES})
    out["workload.guidance"] = workload.get("guidance")
    prompt, gen = workload.get("prompt_len"), workload.get("gen_len")
    out["workload.gen_share"] = gen / (gen + prompt) if prompt and gen else None
    out.update(_numeric_items("workload.p", workload.get("params")))
    return out


def node_features(node: Mapping) -> dict[str, Value]:
    out: dict[str, Value] = {"node.device_kind": node.get("device_kind")}
    out.update({f"node.{k}": _log2_size(node.get(k)) for k in NODE_SIZES})
    flops, bandwidth = node.get("fp32_gflops"), node.get("mem_bw_gbs")
    # The roofline ridge point says whether decoding on this node is memory- or compute-bound.
    out["node.flops_per_byte"] = flops / bandwidth if flops and bandwidth else None
    out.update(_numeric_items("node.fp", node.get("fingerprint")))
    return out


def task_features(record: Mapping) -> dict[str, Value]:
    out = model_features(record["model"])
    out.update(workload_features(record["workload"]))
    out.update(node_features(record["node"]))
    return out


def candidate_features(method_id: str, config: Mapping | None) -> dict[str, Value]:
    """The method side of a (task, method) row; composites "a+b" also expose their parts."""
    parts = method_id.split("+")
    out: dict[str, Value] = {"method": method_id, "method.n_parts": float(len(parts))}
    for part in parts:
        out[f"method.part={part}"] = 1.0
        out[f"method.family={part.split('.')[0]}"] = 1.0
    out.update(_numeric_items("cfg", config_knobs(config)))
    return out


def config_knobs(config: Mapping | None) -> Mapping:
    """The knobs of a config: the registry's {"method", "version", "params"} envelope is unwrapped,
    and a composite's list of envelopes is merged with each part's knobs prefixed by its method."""
    if not config:
        return {}
    if isinstance(config.get("params"), Mapping):
        return config["params"]
    merged: dict = {}
    for value in config.values():
        if isinstance(value, list):
            for part in value:
                if isinstance(part, Mapping) and isinstance(part.get("params"), Mapping):
                    merged.update({f"{part.get('method')}.{k}": v for k, v in part["params"].items()})
    return merged or config


@dataclass(frozen=True)
class FeatureSchema:
    """Column layout: numeric names, then one column per (categorical name, seen value)."""

    numeric: tuple[str, ...]
    categorical: tuple[tuple[str, tuple[str, ...]], ...]
    version: int = FEATURE_SCHEMA_VERSION

    @property
    def columns(self) -> list[str]:
        return list(self.numeric) + [f"{name}={value}" for name, values in self.categorical for value in values]

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "numeric": list(self.numeric),
            "categorical": {name: list(values) for name, values in self.categorical},
        }

    @classmethod
    def from_json(cls, data: Mapping) -> FeatureSchema:
        if data["version"] != FEATURE_SCHEMA_VERSION:
            raise ValueError(
                f"feature schema version {data['version']} does not match this code's "
                f"{FEATURE_SCHEMA_VERSION}; retrain the advisor"
            )
        return cls(tuple(data["numeric"]), tuple((k, tuple(v)) for k, v in data["categorical"].items()))


def fit_schema(rows: Iterable[Mapping[str, Value]]) -> FeatureSchema:
    numeric: set[str] = set()
    categorical: dict[str, set[str]] = {}
    for row in rows:
        for name, value in row.items():
            if isinstance(value, str):
                categorical.setdefault(name, set()).add(value)
            elif value is not None:
                numeric.add(name)
    clash = numeric & set(categorical)
    if clash:
        raise ValueError(f"features both numeric and text: {sorted(clash)}")
    return FeatureSchema(tuple(sorted(numeric)), tuple((k, tuple(sorted(v))) for k, v in sorted(categorical.items())))


def to_matrix(rows: Iterable[Mapping[str, Value]], schema: FeatureSchema) -> np.ndarray:
    """Missing numeric values are NaN; an unseen category sets no one-hot column."""
    index = {name: i for i, name in enumerate(schema.numeric)}
    offset = len(schema.numeric)
    categorical_columns = []
    for name, values in schema.categorical:
        for category in values:
            index[f"{name}={category}"] = offset
            categorical_columns.append(offset)
            offset += 1
    rows = list(rows)
    matrix = np.full((len(rows), offset), np.nan)
    # A known categorical attribute is never "missing": its one-hot columns are 0 unless set.
    matrix[:, categorical_columns] = 0.0
    for i, row in enumerate(rows):
        for name, value in row.items():
            if isinstance(value, str):
                column = index.get(f"{name}={value}")
                if column is not None:
                    matrix[i, column] = 1.0
            elif value is not None and name in index:
                matrix[i, index[name]] = float(value)
    return matrix
