"""Is a retrained advisor worse than the active one? Both measured on the same folds of today's data.

The candidate is trained on every stored profile, the active version on its own snapshot (the
run ids it was trained on). Within each fold of the unseen-model split of today's table, each
is fitted on the training tasks as its data had them — the active one sees only the cells its
snapshot measured — and both choose for the same held-out tasks, scored by the same true values.
So a comparison never mixes a change of folds (a new model reshuffles every group) with a
change of the advisor, the reason a retrain once looked worse than it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from advisor.baselines import Oracle, SingleBest
from advisor.evaluate import PLAIN, cv_folds, selector_factories
from advisor.metrics import choose, gap_closed, task_losses
from advisor.table import PerfTable, table_from_records

SPLIT = "model"
TOLERANCE = 1e-3  # relative: a mean regret within 0.1 % of the active one's counts as not worse


def restricted(table: PerfTable, records: Sequence[Mapping], snapshot: set[str]) -> PerfTable:
    """Today's table with only the cells the snapshot's records measured (same rows and columns)."""
    kept = [r for r in records if r["run_id"] in snapshot]
    if not kept:
        return replace(table, values=np.where(np.arange(table.values.shape[1]) == 0, table.values, np.nan))
    old = table_from_records(kept, name="snapshot")
    rows = {t: i for i, t in enumerate(old.tasks)}
    cols = {c: j for j, c in enumerate(old.candidates)}
    values = np.full(table.values.shape, np.nan)
    extras = {k: np.full(table.values.shape, np.nan) for k in table.extras}
    for i, task in enumerate(table.tasks):
        if task not in rows:
            continue
        for j, cand in enumerate(table.candidates):
            if cand in cols:
                values[i, j] = old.values[rows[task], cols[cand]]
                for k in extras:
                    extras[k][i, j] = old.extras[k][rows[task], cols[cand]]
    values[:, 0] = 1.0  # the baseline is every task's implicit candidate
    return replace(table, values=values, extras=extras)


def compare_on_same_folds(
    table: PerfTable,
    records: Sequence[Mapping],
    snapshot: set[str] | None,
    active_id: str,
    size: str = "full",
    seeds: int = 1,
) -> dict:
    """Mean regret and gap closed of candidate and active version on identical folds, and the verdict."""
    groups = table.groups.get(SPLIT)
    if groups is None or len(set(groups.tolist())) < 2:
        return {"against": active_id, "not_worse": True, "reason": "fewer than 2 models: nothing to hold out"}
    figures = same_fold_figures(table, records, {"candidate": None, "active": snapshot}, size, seeds)
    return {"against": active_id, **_verdict(table, seeds, figures, "candidate", "active", active_id)}


def compare_snapshots(
    table: PerfTable,
    records: Sequence[Mapping],
    newer: tuple[str, set[str] | None],
    older: tuple[str, set[str] | None],
    size: str = "full",
    seeds: int = 1,
) -> dict:
    """Any two versions, each by (id, snapshot), on identical folds of today's table, and the verdict.

    The gate compares a retrain with the version active when it was trained; this compares any
    pair an admin picks, later, on the profiles stored now (which may hold more than either saw).
    """
    (newer_id, newer_snapshot), (older_id, older_snapshot) = newer, older
    groups = table.groups.get(SPLIT)
    if groups is None or len(set(groups.tolist())) < 2:
        raise ValueError("the stored profiles hold fewer than 2 models: there is nothing to hold out")
    figures = same_fold_figures(table, records, {"newer": newer_snapshot, "older": older_snapshot}, size, seeds)
    verdict = _verdict(table, seeds, figures, "newer", "older", older_id)
    return {"newer_id": newer_id, "older_id": older_id, "n_profiles": len(records), **verdict}


def same_fold_figures(
    table: PerfTable,
    records: Sequence[Mapping],
    snapshots: Mapping[str, set[str] | None],
    size: str,
    seeds: int,
) -> dict[str, dict[str, float]]:
    """Mean regret and gap closed per named snapshot, all chosen for the same held-out tasks.

    Within each fold each side is fitted on the training tasks as its snapshot had them (None: every
    cell of today's table); every choice is scored by today's true values, so the sides differ only
    in what they were trained on.
    """
    make = selector_factories(size)[PLAIN]  # what the trained advisor deploys
    restricted_tables = {
        name: table if known is None else restricted(table, records, known) for name, known in snapshots.items()
    }
    losses: dict[str, list[float]] = {name: [] for name in (*snapshots, "sbs", "vbs")}
    for seed in range(seeds):
        chosen = {name: np.zeros(len(table.tasks), dtype=int) for name in losses}
        for train, test in cv_folds(table, SPLIT, seed):
            test_table = table.subset(test)
            for name, known in restricted_tables.items():
                chosen[name][test] = _fitted_choices(make(seed), known, train, test_table, full=known is table)
            chosen["sbs"][test] = _choices(SingleBest(), table.subset(train), test_table)
            chosen["vbs"][test] = _choices(Oracle(), table.subset(train), test_table)
        for name, picked in chosen.items():
            losses[name].append(float(task_losses(table, picked).mean()))
    mean = {name: float(np.mean(v)) for name, v in losses.items()}
    return {
        name: {"mean_regret": mean[name], "gap_closed": gap_closed(mean[name], mean["sbs"], mean["vbs"])}
        for name in snapshots
    }


def _fitted_choices(selector, known: PerfTable, train: np.ndarray, test: PerfTable, full: bool) -> np.ndarray:
    if full:
        return _choices(selector, known.subset(train), test)
    known_train = known.subset(train)
    seen = known_train.available[:, 1:].any(axis=1)  # tasks the snapshot had measured at all
    # A version that measured none of the training tasks can only say "no acceleration".
    if not seen.any():
        return np.zeros(len(test.tasks), dtype=int)
    return _choices(selector, known_train.subset(np.flatnonzero(seen)), test)


def _verdict(table: PerfTable, seeds: int, figures: dict, mine: str, theirs: str, other_id: str) -> dict:
    """The comparison's fields: both sides' figures, whether ``mine`` is not worse, and why, in words."""
    not_worse = figures[mine]["mean_regret"] <= figures[theirs]["mean_regret"] * (1 + TOLERANCE)
    verdict = "not worse" if not_worse else "worse"
    reason = (
        f"{verdict} than {other_id} on the same folds: mean regret {figures[mine]['mean_regret']:.4f} vs "
        f"{figures[theirs]['mean_regret']:.4f} on held-out models"
    )
    return {
        "split": SPLIT,
        "seeds": seeds,
        "n_tasks": len(table.tasks),
        **figures,
        "not_worse": bool(not_worse),
        "reason": reason,
    }


def _choices(selector, train: PerfTable, test: PerfTable) -> np.ndarray:
    return choose(selector.fit(train).scores(test), test.available)
