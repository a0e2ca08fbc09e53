"""The profiling planner: which (task, method) to measure next, so the pool learns the most per second.

A candidate measurement is one unmeasured cell of the task × method table (a task is model,
workload and hardware class, so a cell names the node class it runs on). Its value is the
expected improvement of that task's recommendation: with the learner's 10/50/90 % quantiles
read as a normal distribution of the cell's log speed-up, EI = E[max(Y − best, 0)], where best
is the task's best measured (or, with nothing measured, predicted) log speed-up — uncertainty ×
plausible win. Its cost is the seconds such a measurement took before (the method's median
record time in the store). The planner ranks cells by EI per second.

``replay`` judges it on a complete grid: hide every record, reveal them in the planner's order
(retraining after each batch), and after each batch score the advisor on every task — it
picks the measured best where a task is fully measured, otherwise the best of measured and
predicted values — as mean regret (oracle ÷ chosen speed-up, 1 = oracle) against the fraction of
the grid's measuring time spent; random and round-robin order are the baselines.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

import numpy as np
from scipy.special import erf

from advisor.features import BASELINE, candidate_key, task_key
from advisor.landmarks import record_seconds
from advisor.learner import MetaLearner
from advisor.table import PerfTable, table_from_records

STRATEGIES = ("planner", "random", "round_robin")
QUANTILES = (0.1, 0.9)
Z90 = 1.2816  # the 90 % quantile of a standard normal


def expected_improvement(mean: np.ndarray, sigma: np.ndarray, best: np.ndarray) -> np.ndarray:
    """E[max(Y − best, 0)] for Y ~ N(mean, sigma²), elementwise."""
    sigma = np.maximum(sigma, 1e-6)
    z = (mean - best) / sigma
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + erf(z / math.sqrt(2)))
    return (mean - best) * cdf + sigma * pdf


def _learner(table: PerfTable, seed: int) -> MetaLearner:
    return MetaLearner(
        target="log_speedup", relative=False, quantiles=QUANTILES, n_estimators=120, learning_rate=0.1, seed=seed
    ).fit(table)


def predicted(full: PerfTable, known: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sigma of every cell's log speed-up from a learner fitted on the known cells only."""
    hidden = ~known
    train = full.extras["log_speedup"].copy()
    train[hidden] = np.nan
    values = np.where(known, full.values, np.nan)
    values[:, 0] = 1.0
    seen = replace(full, values=values, extras={**full.extras, "log_speedup": train})  # same rows and columns
    learner = _learner(seen, seed)
    mean = learner.predict(full.task_x, full.cand_x)
    low = learner.predict(full.task_x, full.cand_x, "q0.1")
    high = learner.predict(full.task_x, full.cand_x, "q0.9")
    return mean, np.abs(high - low) / (2 * Z90)


def plan_scores(full: PerfTable, known: np.ndarray, cost: np.ndarray, seed: int = 0) -> np.ndarray:
    """EI per second of every cell (−inf where measured or never measurable)."""
    mean, sigma = predicted(full, known, seed)
    measured = np.where(known, full.extras["log_speedup"], np.nan)
    measured[:, 0] = 0.0
    best = np.nanmax(np.where(known, measured, np.nan), axis=1, keepdims=True)
    best = np.where(np.isnan(best), np.nanmax(mean, axis=1, keepdims=True), best)
    gain = expected_improvement(mean, sigma, best) / np.maximum(cost, 1e-3)
    return np.where(known | np.isnan(cost), -np.inf, gain)


def advisor_regret(full: PerfTable, known: np.ndarray, mean: np.ndarray) -> float:
    """Mean over tasks of oracle ÷ chosen speed-up, choosing the best of measured and predicted values."""
    measurable = ~np.isnan(full.values)
    utility = np.where(known, full.utility, mean)
    utility = np.where(measurable, utility, -np.inf)
    utility[:, 0] = 0.0
    chosen = np.argmax(utility, axis=1)
    rows = np.arange(len(full.tasks))
    best = np.nanmax(full.values, axis=1)
    return float(np.mean(best / full.values[rows, chosen]))


def cell_costs(records: Sequence[Mapping], table: PerfTable) -> np.ndarray:
    """Seconds each cell's measurement took (NaN where the grid has no such record)."""
    rows = {t: i for i, t in enumerate(table.tasks)}
    cols = {c: j for j, c in enumerate(table.candidates)}
    cost = np.full(table.values.shape, np.nan)
    for r in records:
        if r["method_id"] == BASELINE or r["status"] != "ok":
            continue
        i, j = rows[task_key(r)], cols[candidate_key(r["method_id"], r.get("config"))]
        cost[i, j] = (0.0 if np.isnan(cost[i, j]) else cost[i, j]) + record_seconds(r)
    cost[np.isnan(table.values)] = np.nan
    return cost


def estimated_costs(true_cost: np.ndarray, known: np.ndarray) -> np.ndarray:
    """What the planner may know: each method's median time over the cells measured so far."""
    est = np.full(true_cost.shape, np.nan)
    fallback = np.nanmedian(np.where(known, true_cost, np.nan)) if known[:, 1:].any() else 1.0
    for j in range(true_cost.shape[1]):
        seen = true_cost[known[:, j], j]
        seen = seen[~np.isnan(seen)]
        est[:, j] = np.median(seen) if len(seen) else fallback
    return np.where(np.isnan(true_cost), np.nan, est)


def replay(records: Sequence[Mapping], seed: int = 0, steps: int = 20, start: float = 0.05) -> dict:
    """Regret against the fraction of the grid's measuring time spent, for each strategy."""
    full = table_from_records(records)
    cost = cell_costs(records, full)
    cells = np.argwhere(~np.isnan(cost))
    total = float(np.nansum(cost))
    rng = np.random.default_rng(seed)
    first = cells[rng.permutation(len(cells))[: max(1, int(start * len(cells)))]]
    batch = max(1, (len(cells) - len(first)) // steps)
    out = {}
    for strategy in STRATEGIES:
        known = np.zeros(full.values.shape, dtype=bool)
        known[:, 0] = True
        known[first[:, 0], first[:, 1]] = True
        order = _fixed_order(strategy, cells, full, seed)
        curve = []
        while True:
            mean, _ = predicted(full, known, seed)
            spent = float(np.nansum(np.where(known, cost, 0.0)))
            curve.append(
                {
                    "fraction": round(spent / total, 4),
                    "cells": int(known[:, 1:].sum()),
                    "regret": advisor_regret(full, known, mean),
                }
            )
            todo = ~known & ~np.isnan(cost)
            if not todo.any():
                break
            if strategy == "planner":
                scores = plan_scores(full, known, estimated_costs(cost, known), seed)
                picks = [p for p in np.argsort(-scores, axis=None)[:batch] if np.isfinite(scores.flat[p])]
                picked = np.column_stack(np.unravel_index(picks, scores.shape))
            else:
                picked = np.array([c for c in order if todo[c[0], c[1]]][:batch])
            known[picked[:, 0], picked[:, 1]] = True
        out[strategy] = curve
    return {
        "seed": seed,
        "tasks": len(full.tasks),
        "cells": int(len(cells)),
        "seconds_of_grid": round(total, 1),
        "curves": out,
    }


def _fixed_order(strategy: str, cells: np.ndarray, full: PerfTable, seed: int) -> list[tuple[int, int]]:
    if strategy == "random":
        return [tuple(c) for c in cells[np.random.default_rng(seed + 1).permutation(len(cells))]]
    if strategy == "round_robin":  # one method per task in turn, methods in a fixed order
        per_task: dict[int, list[int]] = {}
        for i, j in cells:
            per_task.setdefault(int(i), []).append(int(j))
        order, depth = [], 0
        while any(depth < len(v) for v in per_task.values()):
            order += [(i, v[depth]) for i, v in sorted(per_task.items()) if depth < len(v)]
            depth += 1
        return order
    return []


def reached(curve: Sequence[Mapping], target: float) -> float | None:
    """The smallest fraction of the grid's time at which the regret is at most ``target``."""
    return next((point["fraction"] for point in curve if point["regret"] <= target), None)


def plan_next(
    records: Sequence[Mapping],
    n: int = 10,
    seed: int = 0,
    *,
    models: Collection[str] | None = None,
    hardware_classes: Collection[str] | None = None,
    methods: Collection[str] | None = None,
    workload_ids: Collection[str] | None = None,
) -> list[dict]:
    """The ``n`` unmeasured (task, method) cells with the highest expected improvement per second.

    A cell is a candidate where its method ran on some task of the same workload kind and was
    never tried (in any status) on this task; its node is any node of the task's hardware class.
    ``models``, ``hardware_classes``, ``methods`` (method ids, composites as ``a+b``) and
    ``workload_ids`` restrict the cells (None: any); the whole store still trains the learner.
    """
    table = table_from_records(records)
    tried = {(task_key(r), candidate_key(r["method_id"], r.get("config"))) for r in records}
    kinds_of_task = {task_key(r): r["workload"].get("kind") or "lm-generate" for r in records}
    kinds_of_cand: dict[str, set[str]] = {}
    example: dict[str, Mapping] = {}
    for r in records:
        cand = candidate_key(r["method_id"], r.get("config"))
        kinds_of_cand.setdefault(cand, set()).add(r["workload"].get("kind") or "lm-generate")
        example.setdefault(task_key(r), r)
        example.setdefault(cand, r)

    def wanted_task(t: str) -> bool:
        task = example[t]
        return (
            (models is None or task["model_id"] in models)
            and (hardware_classes is None or task["hardware_class"] in hardware_classes)
            and (workload_ids is None or task["workload_id"] in workload_ids)
        )

    def wanted_method(c: str) -> bool:
        return c != BASELINE and (methods is None or example[c]["method_id"] in methods)

    known = ~np.isnan(table.values)
    true_cost = cell_costs(records, table)
    estimate = estimated_costs(np.where(known, true_cost, np.nan), known)
    tasks_wanted = [wanted_task(t) for t in table.tasks]
    cands_wanted = [wanted_method(c) for c in table.candidates]
    candidate = np.array(
        [
            [
                tasks_wanted[i] and cands_wanted[j] and (t, c) not in tried and kinds_of_task[t] in kinds_of_cand[c]
                for j, c in enumerate(table.candidates)
            ]
            for i, t in enumerate(table.tasks)
        ]
    )
    if not candidate.any():
        return []
    fallback = float(np.nanmedian(estimate)) if not np.isnan(estimate).all() else 1.0
    cost = np.where(candidate, np.nan_to_num(estimate, nan=fallback), np.nan)
    scores = plan_scores(table, known, cost, seed)
    out = []
    for flat in np.argsort(-scores, axis=None)[:n]:
        i, j = np.unravel_index(flat, scores.shape)
        if not np.isfinite(scores[i, j]):
            break
        task, method = example[table.tasks[i]], example[table.candidates[j]]
        config = method.get("config") or {}
        out.append(
            {
                "model": task["model_id"],
                "workload": {k: v for k, v in task["workload"].items() if k not in ("id", "params") and v is not None},
                "workload_id": task["workload_id"],
                "hardware_class": task["hardware_class"],
                "method": method["method_id"],
                "config": method.get("config") or {},
                "method_entry": method_entry(method["method_id"], config),
                "expected_gain_per_s": float(scores[i, j]),
                "estimated_seconds": float(cost[i, j]),
            }
        )
    return out


def method_entry(method_id: str, config: Mapping) -> dict | list:
    """What a profiling job's ``methods`` takes for a stored candidate: a composite as its parts' configs."""
    if "steps" in config:
        return list(config["steps"])
    if config:
        return dict(config)
    parts = method_id.split("+")
    return [{"method": p} for p in parts] if len(parts) > 1 else {"method": method_id}
