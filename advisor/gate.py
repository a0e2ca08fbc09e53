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
    old = table if snapshot is None else restricted(table, records, snapshot)
    make = selector_factories(size)[PLAIN]  # what the trained advisor deploys
    losses: dict[str, list[float]] = {"candidate": [], "active": [], "sbs": [], "vbs": []}
    for seed in range(seeds):
        chosen = {name: np.zeros(len(table.tasks), dtype=int) for name in losses}
        for train, test in cv_folds(table, SPLIT, seed):
            test_table = table.subset(test)
            chosen["candidate"][test] = _choices(make(seed), table.subset(train), test_table)
            old_train = old.subset(train)
            seen = old_train.available[:, 1:].any(axis=1)  # tasks the active version had measured at all
            old_seen = old_train.subset(np.flatnonzero(seen)) if seen.any() else None
            # An active version that measured none of the training tasks can only say "no acceleration".
            chosen["active"][test] = (
                np.zeros(len(test), dtype=int) if old_seen is None else _choices(make(seed), old_seen, test_table)
            )
            chosen["sbs"][test] = _choices(SingleBest(), table.subset(train), test_table)
            chosen["vbs"][test] = _choices(Oracle(), table.subset(train), test_table)
        for name, picked in chosen.items():
            losses[name].append(float(task_losses(table, picked).mean()))
    mean = {name: float(np.mean(v)) for name, v in losses.items()}
    figures = {
        name: {"mean_regret": mean[name], "gap_closed": gap_closed(mean[name], mean["sbs"], mean["vbs"])}
        for name in ("candidate", "active")
    }
    not_worse = mean["candidate"] <= mean["active"] * (1 + TOLERANCE)
    verdict = "not worse" if not_worse else "worse"
    return {
        "against": active_id,
        "split": SPLIT,
        "seeds": seeds,
        "n_tasks": len(table.tasks),
        **figures,
        "not_worse": bool(not_worse),
        "reason": (
            f"{verdict} than {active_id} on the same folds: mean regret {mean['candidate']:.4f} vs "
            f"{mean['active']:.4f} on held-out models"
        ),
    }


def _choices(selector, train: PerfTable, test: PerfTable) -> np.ndarray:
    return choose(selector.fit(train).scores(test), test.available)
