"""Selection metrics, all computed from the true values of the test tasks.

gap closed = (loss(SBS) − loss(selector)) / (loss(SBS) − loss(VBS)), with loss averaged over
the test tasks: 1 = as good as the oracle, 0 = no better than always using the single best
method, negative = worse than it. loss is the regret ratio best/chosen for speed-ups, the
chosen value (e.g. PAR10) for runtime scenarios, and best − chosen for other measures.
"""

from __future__ import annotations

import numpy as np

from advisor.table import PerfTable

TIE_TOLERANCE = 0.03  # "within 3 % of the oracle" counts as a hit for the tolerant top-1


def choose(scores: np.ndarray, available: np.ndarray) -> np.ndarray:
    """Index of the best-scored available candidate per task."""
    return np.argmax(np.where(available, scores, -np.inf), axis=1)


def loss_matrix(table: PerfTable) -> np.ndarray:
    """Per-task loss of every candidate; NaN where unavailable."""
    values, best = table.values, _best_values(table)[:, None]
    if table.measure == "ratio":
        return best / values if table.higher_is_better else values / best
    if table.measure == "cost":
        return values.copy()
    return np.abs(best - values)


def task_losses(table: PerfTable, chosen: np.ndarray) -> np.ndarray:
    losses = loss_matrix(table)[np.arange(len(table.tasks)), chosen]
    if np.isnan(losses).any():
        raise ValueError("a selector chose an unavailable candidate")
    return losses


def _best_values(table: PerfTable) -> np.ndarray:
    reduce = np.nanmax if table.higher_is_better else np.nanmin
    return reduce(table.values, axis=1)


def top1(table: PerfTable, chosen: np.ndarray, tolerance: float = 0.0) -> float:
    rows = np.arange(len(table.tasks))
    picked, best = table.values[rows, chosen], _best_values(table)
    if table.measure == "score":
        hits = np.abs(best - picked) <= tolerance * np.abs(best) + 1e-12
    elif table.higher_is_better:
        hits = picked * (1 + tolerance) >= best - 1e-12
    else:
        hits = picked <= best * (1 + tolerance) + 1e-12
    return float(hits.mean())


def ndcg_at(table: PerfTable, scores: np.ndarray, k: int = 3) -> float:
    """Gains are the true utilities min-max scaled per task to [0, 1] over available candidates."""
    utility, available = table.utility, table.available
    total = 0.0
    for i in range(len(table.tasks)):
        cols = np.flatnonzero(available[i])
        u = utility[i, cols]
        span = u.max() - u.min()
        gain = (u - u.min()) / span if span > 0 else np.ones_like(u)
        discounts = 1.0 / np.log2(np.arange(2, min(k, len(cols)) + 2))
        predicted = np.argsort(-scores[i, cols], kind="stable")[:k]
        ideal = np.sort(gain)[::-1][:k]
        total += float(gain[predicted] @ discounts) / float(ideal @ discounts)
    return total / len(table.tasks)


def gap_closed(loss_selector: float, loss_sbs: float, loss_vbs: float) -> float:
    gap = loss_sbs - loss_vbs
    return float((loss_sbs - loss_selector) / gap) if gap > 1e-12 else float("nan")


def mean_regret(table: PerfTable, chosen: np.ndarray) -> float:
    """Oracle ÷ chosen (≥ 1) for positive measures; the loss difference otherwise."""
    rows = np.arange(len(table.tasks))
    picked, best = table.values[rows, chosen], _best_values(table)
    if table.measure == "score":
        return float(np.abs(best - picked).mean())
    return float((best / picked if table.higher_is_better else picked / best).mean())
