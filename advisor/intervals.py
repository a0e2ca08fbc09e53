"""Do the 10–90 % intervals mean what they say? Coverage out of fold, calibrated by conformal offsets.

For each figure (log speed-up, quality change, log memory ratio) the learner's 10 % and 90 %
quantile models are fitted on the training folds of a split and predict the held-out cells;
coverage = the share of held-out measurements inside [q10, q90]. Quantile trees on a few
hundred tasks are over-confident on unseen models and hardware, so the interval is calibrated
the conformalised-quantile-regression way (Romano et al., 2019): with scores
s = max(q10 − y, y − q90) on out-of-fold cells, the offset is their 80 % (finite-sample
corrected) quantile and the interval becomes [q10 − offset, q90 + offset]. Coverage of the
calibrated interval is measured cross-conformally: the cells of fold f are judged with the
offset computed from the other folds' scores only. One offset per split ("regime"): the
recommendation uses the unseen-model offset for a model the advisor has no run of, the
unseen-hardware one for a new hardware class, and the random-split one otherwise.

The folds here are balanced by size (calibration_folds): whole groups, the largest first, each
into the fold with the fewest tasks so far. Cross-conformal calibration assumes every fold's
model is like the others; with the evaluation's round-robin folds one fold could hold lm-1m and
lm-8m together (80 of 120 tasks, 662 of 932 memory cells), its quantile models trained on the
40 tasks left, and the offset from the other folds (models trained on 80–116 tasks) was 0.023
where that fold needed 0.231: unseen-model memory coverage 0.686 (docs/advisor.md).
"""

from __future__ import annotations

import numpy as np

from advisor.learner import MetaLearner
from advisor.table import PerfTable

FIGURES = ("log_speedup", "quality_delta", "log_memory_ratio")
NOMINAL = 0.8
QUANTILES = (0.1, 0.9)


def conformal_offset(scores: np.ndarray, level: float = NOMINAL) -> float:
    n = len(scores)
    if n == 0:
        return 0.0
    return float(np.quantile(scores, min(1.0, level * (1 + 1 / n)), method="higher"))


def calibration_folds(table: PerfTable, split: str, seed: int, n_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Whole groups of ``split`` per fold (as advisor.evaluate.cv_folds), the folds balanced by task count.

    Groups in the seed's random order, stably sorted largest first, each into the fold with the
    fewest tasks so far (scikit-learn's GroupKFold rule). With groups of one task (the random
    split) or two groups (two hardware classes) these are cv_folds' folds.
    """
    labels = table.groups.get(split)
    if labels is None:
        raise ValueError(f"{table.name} cannot be split by {split!r}; it has {sorted(table.groups)}")
    groups, counts = np.unique(labels, return_counts=True)
    if len(groups) < 2:
        raise ValueError(f"{table.name}: split {split!r} needs at least 2 groups, found {len(groups)}")
    order = np.random.default_rng(seed).permutation(len(groups))
    order = order[np.argsort(-counts[order], kind="stable")]
    sizes = np.zeros(min(n_folds, len(groups)), dtype=int)
    fold_of = {}
    for g in order:
        f = int(np.argmin(sizes))
        fold_of[groups[g]] = f
        sizes[f] += counts[g]
    assigned = np.array([fold_of[g] for g in labels])
    return [(np.flatnonzero(assigned != f), np.flatnonzero(assigned == f)) for f in np.unique(assigned)]


def _out_of_fold(table: PerfTable, figure: str, folds, n_estimators: int, seed: int):
    from advisor.model import LEARNING_RATE  # the trained advisor's own quantile models

    """Per held-out observed cell: its fold, the true value and the q10/q90 predictions."""
    rows: list[tuple[np.ndarray, ...]] = []
    for f, (train, test) in enumerate(folds):
        train_table, test_table = table.subset(train), table.subset(test)
        truth = test_table.extras[figure]
        if np.isnan(train_table.extras[figure]).all() or np.isnan(truth).all():
            continue
        learner = MetaLearner(
            target=figure,
            relative=False,
            quantiles=QUANTILES,
            n_estimators=n_estimators,
            learning_rate=LEARNING_RATE,
            with_point=False,
            seed=seed,
        ).fit(train_table)
        low = learner.predict(test_table.task_x, test_table.cand_x, f"q{QUANTILES[0]:g}")
        high = learner.predict(test_table.task_x, test_table.cand_x, f"q{QUANTILES[1]:g}")
        observed = ~np.isnan(truth)
        observed[:, 0] = False  # the baseline's figures are 0 by definition: not a prediction
        lo, hi = np.minimum(low, high)[observed], np.maximum(low, high)[observed]
        rows.append((np.full(observed.sum(), f), truth[observed], lo, hi))
    if not rows:
        return None
    return tuple(np.concatenate(column) for column in zip(*rows, strict=True))


def coverage(table: PerfTable, folds, n_estimators: int, seed: int = 0) -> dict:
    """Per figure: raw and calibrated coverage of the nominal 80 % interval on held-out cells, and the offset."""
    out = {}
    for figure in FIGURES:
        if figure not in table.extras:
            continue
        found = _out_of_fold(table, figure, folds, n_estimators, seed)
        if found is None:
            continue
        fold, truth, low, high = found
        scores = np.maximum(low - truth, truth - high)
        inside = np.zeros(len(truth), dtype=bool)
        for f in np.unique(fold):
            offset = conformal_offset(scores[fold != f])
            mine = fold == f
            inside[mine] = (low[mine] - offset <= truth[mine]) & (truth[mine] <= high[mine] + offset)
        out[figure] = {
            "nominal": NOMINAL,
            "raw": float(((low <= truth) & (truth <= high)).mean()),
            "calibrated": float(inside.mean()),
            "offset": conformal_offset(scores),  # what a model trained on all of it adds on this split
            "cells": int(len(truth)),
        }
    return out
