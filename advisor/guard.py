"""A training-range guard around any selector: no extrapolation in model size.

Trees (and every learner here) only repeat the edge of the data beyond it: a model smaller or
larger than every profiled one gets the ranking of the nearest profiled size, and the
ranking of acceleration methods flips with model size (int8 and speculative decoding lose on
a 1 M-parameter model and win from ~8 M up, docs/seed-profiles.md). So for a task whose
guarded features lie outside the range the training tasks of its workload kind covered (by
more than a margin), or whose model family or workload kind no training task had, the guard
answers with the training set's single best solver instead. Missing sizes never trigger it.
Inside the range a size also needs profiled sizes near it: within MAX_GAP (in log2 units) on
both sides, or within the margin of one. One sparsely measured model far below the others
must not open the whole gap to interpolation: a 0.1 M model with 2 tasks made the learner
carry lm-2m's winners down to lm-1m (unseen-model gap closed 0.289 → 0.148 on the same folds,
docs/advisor.md).
Ranges are per workload kind because the methods differ by kind: a 1 M model measured only on
long-context retrieval says nothing about which serving method suits a 1 M model.
"""

from __future__ import annotations

import numpy as np

from advisor.baselines import Selector, single_best_scores
from advisor.table import PerfTable

MODEL_SIZE = ("model.params",)
# One-hot prefixes: a family or kind unseen in training sets none of its columns.
MODEL_FAMILY, WORKLOAD_KIND = "model.family=", "workload.kind="
# In the feature's units: log2(1 + params), so 0.5 = about 1.4× beyond the profiled sizes.
DEFAULT_MARGIN = 0.5
MAX_GAP = 2.5  # ≈ 5.7× in parameters: interpolation between profiled sizes at most this far apart


def guarded_columns(table: PerfTable, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    index = {name: i for i, name in enumerate(table.feature_names)}
    return {name: table.task_x[:, index[name]] for name in names if name in index}


def _seen_one_hot(table: PerfTable, prefix: str) -> tuple[str, ...]:
    """The one-hot columns of a prefix that some task of this table sets (a schema may know more)."""
    names = tuple(n for n in table.feature_names if n.startswith(prefix))
    return tuple(name for name, column in guarded_columns(table, names).items() if np.nansum(column) > 0)


def _membership(table: PerfTable, columns: tuple[str, ...]) -> np.ndarray:
    """n_tasks × len(columns) booleans: which of these one-hot values each task has."""
    found = guarded_columns(table, columns)
    return np.column_stack([found[c] == 1 if c in found else np.zeros(len(table.tasks), bool) for c in columns])


class RangeGuard:
    def __init__(self, inner: Selector, features: tuple[str, ...] = MODEL_SIZE, margin: float = DEFAULT_MARGIN):
        self.inner = inner
        self.features = features
        self.margin = margin

    def fit(self, table: PerfTable) -> RangeGuard:
        self.inner.fit(table)
        self.fallback_ = single_best_scores(table)
        self.families_ = _seen_one_hot(table, MODEL_FAMILY)
        self.kinds_ = _seen_one_hot(table, WORKLOAD_KIND)
        # (feature, kind) → the profiled values; kind None when the table has no workload kinds (ASlib, CSV).
        kinds = _membership(table, self.kinds_) if self.kinds_ else np.ones((len(table.tasks), 1), bool)
        self.support_: dict[tuple[str, str | None], np.ndarray] = {}
        for name, column in guarded_columns(table, self.features).items():
            for k, kind in enumerate(self.kinds_ or (None,)):
                values = column[kinds[:, k]]
                if not np.isnan(values).all():
                    self.support_[(name, kind)] = np.unique(values[~np.isnan(values)])
        return self

    def outside(self, table: PerfTable) -> np.ndarray:
        """Per task: a guarded size its kind's profiled sizes do not support, or an unseen family or kind."""
        out = np.zeros(len(table.tasks), dtype=bool)
        if self.families_:
            out |= ~_membership(table, self.families_).any(axis=1)
        kinds = _membership(table, self.kinds_) if self.kinds_ else np.ones((len(table.tasks), 1), bool)
        if self.kinds_:
            out |= ~kinds.any(axis=1)
        for name, column in guarded_columns(table, self.features).items():
            for k, kind in enumerate(self.kinds_ or (None,)):
                if (name, kind) in self.support_:
                    out |= kinds[:, k] & unsupported(column, self.support_[(name, kind)], self.margin)
        return out

    def scores(self, table: PerfTable) -> np.ndarray:
        scores = np.array(self.inner.scores(table), dtype=float)
        outside = self.outside(table)
        scores[outside] = self.fallback_
        return scores


def unsupported(values: np.ndarray, profiled: np.ndarray, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """True where a value is neither within ``margin`` of a profiled one nor between two at most MAX_GAP away."""
    values = np.asarray(values, dtype=float)
    below_at = np.searchsorted(profiled, values, side="right") - 1  # the largest profiled value <= v
    below = np.where(below_at >= 0, profiled[np.clip(below_at, 0, None)], -np.inf)
    above_at = np.searchsorted(profiled, values, side="left")  # the smallest profiled value >= v
    above = np.where(above_at < len(profiled), profiled[np.clip(above_at, None, len(profiled) - 1)], np.inf)
    with np.errstate(invalid="ignore"):
        near = np.minimum(values - below, above - values) <= margin
        bracketed = (values - below <= MAX_GAP) & (above - values <= MAX_GAP)
        return ~np.isnan(values) & ~near & ~bracketed
