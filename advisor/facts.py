"""What a trained advisor knows besides its learners, computed once from its training records.

- **measured**: per task (model | workload | hardware class) and candidate, the figures that
  were measured — a recommendation for a profiled task answers with them, not a prediction.
- **zero-shot**: per workload kind and candidate, the median (and 10–90 % spread) over the
  profiled tasks of that kind — the answer for a task outside what the learner may interpolate.
- **kinds**: the workload kinds each method has a successful run on; a method is ranked only for
  a workload of a kind it was measured on.
- **support**: per kind, the profiled model sizes (log2(1 + params)) and the model families,
  for the same check the evaluation's range guard makes (advisor.guard).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from advisor.features import BASELINE, _log2_size, candidate_key, task_key
from advisor.table import PerfTable

# Figures kept per measured cell and per zero-shot cell, as in PerfTable.extras.
FIGURES = ("log_speedup", "quality_delta", "log_throughput_ratio", "log_memory_ratio")


def record_kind(record: Mapping) -> str:
    return record["workload"].get("kind") or "lm-generate"


def _spread(values: Sequence[float]) -> list[float]:
    """The 10 % and 90 % quantiles (numpy's linear method) of a short list, without numpy's ~1 ms per call."""
    ordered = sorted(float(v) for v in values)
    last = len(ordered) - 1

    def quantile(p: float) -> float:
        position = p * last
        low = int(position)
        high = min(low + 1, last)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return [quantile(0.1), quantile(0.9)]


def measured_cells(records: Sequence[Mapping], table: PerfTable) -> dict[str, dict[str, dict]]:
    """task key → candidate key → {figure: median, "speedup_range": [p10, p90] of every timed pair, "n": runs}."""
    pairs: dict[tuple[str, str], list[float]] = defaultdict(list)
    runs: dict[tuple[str, str], int] = defaultdict(int)
    for record in records:
        if record["method_id"] == BASELINE or record["status"] != "ok":
            continue
        cell = (task_key(record), candidate_key(record["method_id"], record.get("config")))
        runs[cell] += 1
        timed = (record.get("metrics") or {}).get("pairwise_speedups") or [record.get("speedup")]
        pairs[cell] += [float(s) for s in timed if isinstance(s, (int, float)) and s > 0]
    t_index = {t: i for i, t in enumerate(table.tasks)}
    c_index = {c: j for j, c in enumerate(table.candidates)}
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for (task, cand), n in runs.items():
        i, j = t_index[task], c_index[cand]
        if np.isnan(table.values[i, j]):
            continue  # measured, but unavailable (e.g. another run of it failed there)
        figures: dict[str, Any] = {
            f: float(table.extras[f][i, j]) for f in FIGURES if not np.isnan(table.extras[f][i, j])
        }
        if "log_speedup" not in figures:
            continue
        spread = pairs[(task, cand)]
        figures["speedup_range"] = _spread(spread) if spread else [float(np.exp(figures["log_speedup"]))] * 2
        figures["n"] = n
        out[task][cand] = figures
    return dict(out)


def task_kinds(records: Sequence[Mapping]) -> dict[str, str]:
    return {task_key(r): record_kind(r) for r in records}


def zero_shot(table: PerfTable, kinds_of_tasks: Mapping[str, str]) -> dict[str, dict[str, dict]]:
    """kind → candidate key → median and 10–90 % spread of each figure over that kind's tasks."""
    kinds = np.array([kinds_of_tasks[t] for t in table.tasks])
    out: dict[str, dict[str, dict]] = {}
    for kind in sorted(set(kinds.tolist())):
        rows = kinds == kind
        cells: dict[str, dict] = {}
        for j, cand in enumerate(table.candidates):
            available = rows & ~np.isnan(table.values[:, j])
            if not available.any():
                continue
            cell: dict = {"n_tasks": int(available.sum())}
            for figure in FIGURES:
                values = table.extras[figure][available, j]
                values = values[~np.isnan(values)]
                if len(values):
                    cell[figure] = float(np.median(values))
                    cell[f"{figure}_interval"] = _spread(values)
            cells[cand] = cell
        out[kind] = cells
    return out


def method_kinds(records: Sequence[Mapping]) -> dict[str, list[str]]:
    """method id → the workload kinds it ran successfully on."""
    kinds: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record["status"] == "ok":
            kinds[record["method_id"]].add(record_kind(record))
    return {method: sorted(seen) for method, seen in sorted(kinds.items())}


def size_support(records: Sequence[Mapping]) -> dict:
    """The model sizes (log2(1 + params)) per kind and the model families the learner was trained on."""
    sizes: dict[str, set[float]] = defaultdict(set)
    families: set[str] = set()
    for record in records:
        size = _log2_size(record["model"].get("params") or None)
        if size is not None:
            sizes[record_kind(record)].add(round(size, 6))
        if record["model"].get("family"):
            families.add(record["model"]["family"])
    return {"sizes": {k: sorted(v) for k, v in sorted(sizes.items())}, "families": sorted(families)}
