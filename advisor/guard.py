"""A training-range guard around any selector: no extrapolation in model size.

Trees (and every learner here) only repeat the edge of the data beyond it: a model smaller or
larger than every profiled one gets the ranking of the nearest profiled size, and the
ranking of acceleration methods flips with model size (int8 and speculative decoding lose on
a 1 M-parameter model and win from ~8 M up, docs/seed-profiles.md). So for a task whose
guarded features lie outside the training range by more than a margin, or whose model
family no training task had, the guard answers with the training set's single best solver
instead. Missing sizes never trigger it.
"""

from __future__ import annotations

import numpy as np

from advisor.baselines import Selector, single_best_scores
from advisor.table import PerfTable

MODEL_SIZE = ("model.params",)
MODEL_FAMILY = "model.family="  # one-hot columns: a family unseen in training sets none of them
# In the feature's units: log2(1 + params), so 0.5 = about 1.4× beyond the profiled sizes.
DEFAULT_MARGIN = 0.5


def guarded_columns(table: PerfTable, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    index = {name: i for i, name in enumerate(table.feature_names)}
    return {name: table.task_x[:, index[name]] for name in names if name in index}


class RangeGuard:
    def __init__(self, inner: Selector, features: tuple[str, ...] = MODEL_SIZE, margin: float = DEFAULT_MARGIN,
                 category: str | None = MODEL_FAMILY):
        self.inner = inner
        self.features = features
        self.margin = margin
        self.category = category

    def fit(self, table: PerfTable) -> RangeGuard:
        self.inner.fit(table)
        self.ranges_ = {name: (float(np.nanmin(column)), float(np.nanmax(column)))
                        for name, column in guarded_columns(table, self.features).items()
                        if not np.isnan(column).all()}
        self.fallback_ = single_best_scores(table)
        # The family columns some training task set (a table's schema may know more families).
        self.categories_ = tuple(name for name, column in guarded_columns(table, tuple(
            n for n in table.feature_names if self.category and n.startswith(self.category))).items()
            if np.nansum(column) > 0)
        return self

    def outside(self, table: PerfTable) -> np.ndarray:
        """Per task: a guarded size beyond the training range plus the margin, or an unseen family."""
        out = np.zeros(len(table.tasks), dtype=bool)
        for name, column in guarded_columns(table, tuple(self.ranges_)).items():
            low, high = self.ranges_[name]
            with np.errstate(invalid="ignore"):
                out |= (column < low - self.margin) | (column > high + self.margin)
        if self.categories_:
            out |= np.nansum(np.column_stack(list(guarded_columns(table, self.categories_).values())), axis=1) == 0
        return out

    def scores(self, table: PerfTable) -> np.ndarray:
        scores = np.array(self.inner.scores(table), dtype=float)
        outside = self.outside(table)
        scores[outside] = self.fallback_
        return scores
