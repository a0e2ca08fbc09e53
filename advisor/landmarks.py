"""Cold start by landmarks: a few cheap measurements of the model itself, used as task features.

A probe is a profile record like any other — one method measured against the baseline on the
model's cheapest workload of its kind on the node (for a decoder LM: batch 1, 32-token prompt,
32 generated tokens). So on the shipped grid the probes of a task are read from records the
grid already holds, and on a live node a probe is a small profiling job. The probe's value for
every task of that (model, hardware class, workload kind) is its log speed-up, or for the
baseline probe the log of the baseline's latency there.

Cost: a record's measuring time is its setup (calibration, compile) plus its timed and warm-up
repetitions; the baseline's repetitions are paid once per probe pass. The fraction reported
is the probes' time over the time of profiling the model's every task on that node in full.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from advisor.features import BASELINE, task_key

# Candidate probes, in the order measured on the shipped grid (docs/advisor.md, "Landmarks").
PROBES = (
    "baseline_latency",
    "quant.int8_dynamic",
    "lm.spec.swift",
    "sys.compile",
    "lm.spec.medusa",
    "quant.weight_only_int4",
)


def _kind(record: Mapping) -> str:
    return record["workload"].get("kind") or "lm-generate"


def _size(workload: Mapping) -> float:
    return float(
        (workload.get("batch_size") or 1) * ((workload.get("prompt_len") or 0) + (workload.get("gen_len") or 0) or 1)
    )


def _seconds(values) -> float:
    return float(sum(v for v in values or () if isinstance(v, (int, float))))


def record_seconds(record: Mapping) -> float:
    """The time a record's own measurement took: setup plus its timed and warm-up repetitions."""
    metrics = record.get("metrics") or {}
    return (
        float(record.get("setup_s") or 0.0) + _seconds(metrics.get("latencies_s")) + _seconds(metrics.get("warmup_s"))
    )


def baseline_seconds(record: Mapping) -> float:
    return _seconds((record.get("metrics") or {}).get("baseline_latencies_s"))


def landmarks(
    records: Sequence[Mapping], tasks: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Per probe: its value for every task (NaN where the grid has no such record) and its cost in seconds;
    and per task the seconds of profiling its model in full on that node."""
    groups: dict[tuple[str, str, str], list[Mapping]] = defaultdict(list)
    for record in records:
        groups[(record["model_id"], record["hardware_class"], _kind(record))].append(record)
    found: dict[tuple, dict[str, tuple[float, float]]] = {}
    full: dict[tuple, float] = {}
    for group, members in groups.items():
        cheapest = min(_size(r["workload"]) for r in members)
        probe_runs = [r for r in members if _size(r["workload"]) == cheapest and r["status"] == "ok"]
        base = max((baseline_seconds(r) for r in probe_runs), default=0.0)
        values: dict[str, tuple[float, float]] = {}
        latencies = [r["baseline_latency_p50_s"] for r in probe_runs if r.get("baseline_latency_p50_s")]
        if latencies:
            values["baseline_latency"] = (math.log(float(np.median(latencies))), base)
        for probe in PROBES[1:]:
            runs = [r for r in probe_runs if r["method_id"] == probe and r.get("speedup")]
            if runs:
                seconds = float(np.median([record_seconds(r) for r in runs]))
                values[probe] = (math.log(float(np.median([r["speedup"] for r in runs]))), seconds)
        found[group] = values
        per_task: dict[str, float] = defaultdict(float)
        for r in members:
            per_task[r["workload_id"]] += record_seconds(r) if r["method_id"] != BASELINE else 0.0
        bases: dict[str, float] = defaultdict(float)
        for r in members:
            bases[r["workload_id"]] = max(bases[r["workload_id"]], baseline_seconds(r))
        full[group] = sum(per_task.values()) + sum(bases.values())
    group_of = {task_key(r): (r["model_id"], r["hardware_class"], _kind(r)) for r in records}
    probe_values = {p: np.full(len(tasks), np.nan) for p in PROBES}
    costs = {p: np.zeros(len(tasks)) for p in PROBES}
    full_cost = np.zeros(len(tasks))
    for i, task in enumerate(tasks):
        group = group_of[task]
        full_cost[i] = full[group]
        for probe, (value, seconds) in found[group].items():
            probe_values[probe][i], costs[probe][i] = value, seconds
    return probe_values, costs, full_cost


def probe_cost_fraction(costs: Mapping[str, np.ndarray], full_cost: np.ndarray, probes: Sequence[str]) -> float:
    """Mean over tasks of (probes' seconds — the baseline paid once — ÷ the model's full profile on the node)."""
    if not probes:
        return 0.0
    # Every probe runs beside the baseline: its repetitions are paid once, whichever probes are chosen.
    spent = costs["baseline_latency"] + sum(costs[p] for p in probes if p != "baseline_latency")
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(full_cost > 0, spent / full_cost, np.nan)
    return float(np.nanmean(share))
