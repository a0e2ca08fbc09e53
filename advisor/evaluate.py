"""Grouped cross-validation of every selector, side by side.

Splits: "model" (test tasks use models no training task used), "hardware" (unseen hardware
classes), "random" (tasks), and "scenario" (an ASlib scenario's own folds). Each split runs
with several seeds (fold assignment and learner seeds); every metric is reported as mean and
standard deviation over the seeds, each seed's figure computed on all its out-of-fold tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from advisor.alors import Alors
from advisor.baselines import (
    ISAC,
    GradientBoostingSelector,
    NearestNeighbours,
    Oracle,
    RandomForestSelector,
    RandomSelector,
    SingleBest,
)
from advisor.guard import RangeGuard
from advisor.intervals import calibration_folds, coverage
from advisor.learner import MetaLearner
from advisor.metrics import (
    TIE_TOLERANCE,
    choose,
    gap_closed,
    mean_regret,
    ndcg_at,
    task_losses,
    top1,
)
from advisor.model import QUANTILE_ROUNDS
from advisor.pairwise import PairwiseVoting
from advisor.robust import InnerChoice
from advisor.table import PerfTable

log = logging.getLogger(__name__)
SPLITS = ("model", "hardware", "random")
PROBE_COUNTS = (0, 1, 2, 4)
KIND = "workload.kind="  # the one-hot prefix of a task's workload kind
LEARNER = "lightgbm"
PLAIN = "lightgbm_plain"  # the learner the trained advisor deploys: the range-guarded pooled LightGBM
METRICS = ("top1", "top1_tol", "mean_regret", "mean_loss", "gap_closed", "ndcg3")
GAP_DIRECTION = (
    "gap_closed = (loss(SBS) - loss(selector)) / (loss(SBS) - loss(VBS)); 1 = oracle, 0 = single "
    "best solver, < 0 = worse than it. loss = oracle/chosen speed-up (ratio), PAR10 (runtime), "
    "|best - chosen| (other measures); SBS fitted on each training fold."
)


class FitOnce:
    """A selector that several rows of one fold fit alike on the same training table, fitted once.

    The guarded and the bare learner are one booster, and the inner-CV choice refits the learner or
    the pairwise vote on the training fold where their own rows have fitted them already. LightGBM
    runs deterministic on one thread, so the shared fit is the model a second fit would give.
    """

    def __init__(self, key: tuple, make: Callable[[], Any], fitted: dict):
        self.key = key
        self.make = make
        self.fitted = fitted  # (key, id(table)) → (table, fitted selector), one fold's worth

    def fit(self, table: PerfTable) -> FitOnce:
        # Keyed by identity: the table is kept beside its fit, so no other table can take its id meanwhile.
        found = self.fitted.get((self.key, id(table)))
        if found is None:
            found = self.fitted[(self.key, id(table))] = (table, self.make().fit(table))
        self.selector_ = found[1]
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        return self.selector_.scores(table)


def selector_factories(
    size: str = "full", ablations: bool = False, fitted: dict | None = None, split: str = "model"
) -> dict[str, Callable[[int], Any]]:
    """Name → (seed → unfitted selector). "small" trades accuracy for speed (tests, CI).

    ``lightgbm`` is the advisor's selector: the pooled learner (range-guarded), the pairwise vote or
    the SBS, whichever an inner CV on the training folds found best (advisor.robust);
    ``lightgbm_plain`` is the guarded learner alone, ``lightgbm_unguarded`` the bare learner. With
    ``ablations``, two learner variants measured earlier (docs/advisor.md) come too. With ``fitted``
    (an empty dict per training fold), the rows that fit the same learner or pairwise vote on the
    same table share one fit (FitOnce); without it every row fits its own. ``split`` is the outer
    split's kind, which the inner CV of ``lightgbm`` mirrors.
    """
    # A pair forest has half the trees it had (40 in full): one is fitted per pair of candidates, four
    # times per fold with the inner CV, and on a 1 000-task table they were most of the evaluation's
    # time; its figures on the seed grid and LCDB stayed within the spread over seeds (docs/advisor.md).
    trees, pair_trees, rounds, rate = (200, 20, 300, 0.1) if size == "full" else (40, 8, 300, 0.1)

    def shared(key: tuple, make: Callable[[], Any]):
        return make() if fitted is None else FitOnce(key, make, fitted)

    def bare(s):
        return shared(("learner", s), lambda: MetaLearner(n_estimators=rounds, learning_rate=rate, seed=s))

    def plain(s):
        return RangeGuard(bare(s))

    def pairwise(s):
        return shared(("pairwise", s), lambda: PairwiseVoting(n_estimators=pair_trees, seed=s))

    factories: dict[str, Callable[[int], Any]] = {
        "random": lambda s: RandomSelector(seed=s),
        "sbs": lambda s: SingleBest(),
        "isac": lambda s: ISAC(seed=s),
        "alors": lambda s: Alors(n_estimators=trees, seed=s),
        "knn": lambda s: NearestNeighbours(),
        "random_forest": lambda s: RandomForestSelector(n_estimators=trees, seed=s),
        "gradient_boosting": lambda s: GradientBoostingSelector(n_estimators=min(rounds, 200), seed=s),
        "pairwise": pairwise,
        LEARNER: lambda s: InnerChoice(
            {"learner": lambda: plain(s), "pairwise": lambda: pairwise(s), "sbs": SingleBest}, seed=s, split=split
        ),
        PLAIN: plain,
        "lightgbm_unguarded": bare,
        "vbs": lambda s: Oracle(),
    }
    if ablations:
        factories["lightgbm_rank"] = lambda s: RangeGuard(
            MetaLearner(objective="lambdarank", n_estimators=rounds, learning_rate=rate, seed=s)
        )
        factories["lightgbm_risk"] = lambda s: RangeGuard(
            MetaLearner(n_estimators=rounds, learning_rate=rate, quantiles=(0.1, 0.9), risk_aversion=0.5, seed=s)
        )
    return factories


def cv_folds(table: PerfTable, split: str, seed: int, n_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Whole groups go to one fold, so no test task shares a model (or hardware class) with training."""
    if split == "scenario":
        if table.folds is None:
            raise ValueError(f"{table.name} has no folds of its own")
        labels = table.folds
    else:
        if split not in table.groups:
            raise ValueError(f"{table.name} cannot be split by {split!r}; it has {sorted(table.groups)}")
        labels = table.groups[split]
    groups = np.unique(labels)
    if len(groups) < 2:
        raise ValueError(f"{table.name}: split {split!r} needs at least 2 groups, found {len(groups)}")
    if split == "scenario":
        fold_of = {g: i for i, g in enumerate(groups)}
    else:
        order = np.random.default_rng(seed).permutation(groups)
        fold_of = {g: i % min(n_folds, len(groups)) for i, g in enumerate(order)}
    assigned = np.array([fold_of[g] for g in labels])
    return [(np.flatnonzero(assigned != f), np.flatnonzero(assigned == f)) for f in np.unique(assigned)]


def _fold_scores(
    table: PerfTable, train: np.ndarray, test: np.ndarray, names: tuple[str, ...], size: str, seed: int, split: str
):
    """Every named selector fitted on one training fold, scoring its test fold (a worker process's unit)."""
    factories = selector_factories(size, ablations=True, fitted={}, split=split)
    train_table, test_table = table.subset(train), table.subset(test)
    return {name: factories[name](seed).fit(train_table).scores(test_table) for name in names}


def _out_of_fold_scores(
    table: PerfTable, names: tuple[str, ...], split: str, seed: int, n_folds: int, size: str, jobs: int = 1
) -> dict[str, np.ndarray]:
    """Out-of-fold scores of every selector; with ``jobs`` > 1 the folds run in that many processes
    (each fold is fitted from its own seed, so the figures are the same for any ``jobs``)."""
    folds = cv_folds(table, split, seed, n_folds)
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(max_workers=min(jobs, len(folds)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_fold_scores, table, tr, te, names, size, seed, split) for tr, te in folds]
            found = [f.result() for f in futures]
    else:
        found = [_fold_scores(table, tr, te, names, size, seed, split) for tr, te in folds]
    scores = {name: np.zeros(table.values.shape) for name in names}
    for (_, test), fold in zip(folds, found, strict=True):
        for name in names:
            scores[name][test] = fold[name]
    return scores


def _seed_metrics(table: PerfTable, scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    available = table.available
    chosen = {name: choose(s, available) for name, s in scores.items()}
    losses = {name: float(task_losses(table, c).mean()) for name, c in chosen.items()}
    loss_vbs = float(task_losses(table, choose(Oracle().scores(table), available)).mean())
    return {
        name: {
            "top1": top1(table, c),
            "top1_tol": top1(table, c, TIE_TOLERANCE),
            "mean_regret": mean_regret(table, c),
            "mean_loss": losses[name],
            "gap_closed": gap_closed(losses[name], losses["sbs"], loss_vbs),
            "ndcg3": ndcg_at(table, scores[name], 3),
        }
        for name, c in chosen.items()
    }


def task_kinds(table: PerfTable) -> np.ndarray:
    """Each task's workload kind, from its one-hot columns ("" for tables without kinds)."""
    columns = [(i, name.split("=", 1)[1]) for i, name in enumerate(table.feature_names) if name.startswith(KIND)]
    kinds = np.full(len(table.tasks), "", dtype=object)
    for i, kind in columns:
        kinds[table.task_x[:, i] == 1] = kind
    return kinds


def _summary(per_seed: list[dict], factories) -> dict:
    return {
        name: {
            metric: {
                "mean": float(np.mean([s[name][metric] for s in per_seed])),
                "std": float(np.std([s[name][metric] for s in per_seed])),
            }
            for metric in METRICS
        }
        for name in factories
    }


def evaluate_table(
    table: PerfTable,
    splits: tuple[str, ...] = SPLITS,
    seeds: int = 3,
    n_folds: int = 5,
    selectors: tuple[str, ...] | None = None,
    size: str = "full",
    with_coverage: bool = True,
    jobs: int = 1,
) -> dict:
    """The report: per split, per selector, each metric's mean and spread over seeds (folds in ``jobs`` processes)."""
    factories = selector_factories(size, ablations=selectors is not None)
    if selectors is not None:
        unknown = set(selectors) - set(factories)
        if unknown:
            raise ValueError(f"unknown selectors {sorted(unknown)}; choose from {sorted(factories)}")
        factories = {n: f for n, f in factories.items() if n in selectors or n in ("sbs", "vbs")}
    report: dict[str, Any] = {
        "table": table.name,
        "n_tasks": len(table.tasks),
        "n_candidates": len(table.candidates),
        "measure": table.measure,
        "higher_is_better": table.higher_is_better,
        "tie_tolerance": TIE_TOLERANCE,
        "gap_direction": GAP_DIRECTION,
        "n_folds": n_folds,
        "splits": {},
    }
    for split in splits:
        labels = table.folds if split == "scenario" else table.groups.get(split)
        if labels is None or len(np.unique(labels)) < 2:
            report["skipped"] = {**report.get("skipped", {}), split: "fewer than 2 groups to hold out"}
            log.warning("%s: split %s skipped: fewer than 2 groups", table.name, split)
            continue
        n_seeds = 1 if split == "scenario" else seeds
        per_seed = []
        kinds = task_kinds(table)
        per_kind_seed: dict[str, list] = (
            {kind: [] for kind in sorted(set(kinds.tolist()))} if len(set(kinds)) > 1 else {}
        )
        for seed in range(n_seeds):
            log.info("%s: split %s, seed %d", table.name, split, seed)
            scores = _out_of_fold_scores(table, tuple(factories), split, seed, n_folds, size, jobs)
            per_seed.append(_seed_metrics(table, scores))
            for kind, found in per_kind_seed.items():  # the same out-of-fold choices, scored per workload kind
                rows = np.flatnonzero(kinds == kind)
                found.append(_seed_metrics(table.subset(rows), {name: s[rows] for name, s in scores.items()}))
        report["splits"][split] = _summary(per_seed, factories)
        if per_kind_seed:
            report["splits"][split]["_per_kind"] = {kind: _summary(v, factories) for kind, v in per_kind_seed.items()}
        if with_coverage:  # the trained advisor's own quantile models (advisor.model), first seed's balanced folds
            folding = cv_folds if split == "scenario" else calibration_folds
            folds = folding(table, split, 0, n_folds)
            report["splits"][split]["_coverage"] = coverage(table, folds, QUANTILE_ROUNDS[size])
        report["splits"][split]["_seeds"] = n_seeds
        report["splits"][split]["_folds"] = len(cv_folds(table, split, 0, n_folds))  # fewer when groups are few
    return report


def with_probes(table: PerfTable, values: dict[str, np.ndarray], probes: tuple[str, ...]) -> PerfTable:
    """The table with the probes' values as extra task features (what a cold-start model is given)."""
    columns = np.column_stack([values[p] for p in probes]) if probes else np.empty((len(table.tasks), 0))
    return replace(
        table,
        task_x=np.hstack([table.task_x, columns]),
        feature_names=(*table.feature_names, *(f"probe.{p}" for p in probes)),
    )


def evaluate_landmarks(
    table: PerfTable,
    records,
    counts: tuple[int, ...] = PROBE_COUNTS,
    seeds: int = 3,
    n_folds: int = 5,
    size: str = "full",
    selectors: tuple[str, ...] | None = None,
    jobs: int = 1,
) -> dict:
    """Unseen models with 0, 1, 2, 4 probes: every selector given the same probe features, and the probes' cost."""
    from advisor.landmarks import PROBES, landmarks, probe_cost_fraction

    values, costs, full_cost = landmarks(records, table.tasks)
    out: dict = {"order": list(PROBES), "split": "model", "by_count": {}}
    for k in counts:
        probes = PROBES[:k]
        report = evaluate_table(
            with_probes(table, values, probes),
            splits=("model",),
            seeds=seeds,
            n_folds=n_folds,
            selectors=selectors,
            size=size,
            with_coverage=False,
            jobs=jobs,
        )
        out["by_count"][str(k)] = {
            "probes": list(probes),
            "probe_cost_fraction": probe_cost_fraction(costs, full_cost, probes),
            "tasks_with_every_probe": int(np.all([~np.isnan(values[p]) for p in probes], axis=0).sum())
            if probes
            else len(table.tasks),
            "results": report["splits"].get("model", {}),
        }
    return out
