"""Never worse than the best of {learner, pairwise selector, SBS}: choose among them by inner CV.

On the training table only, each option is cross-validated (grouped like the outer split where
the table has models, by instance otherwise); the one with the lowest mean loss on the inner
held-out tasks is refitted on the whole training table and answers. Nothing about the test
tasks is seen, so the choice is as honest as any selector's own fit — and on a table where
the pooled learner loses to a plain pairwise vote or to the SBS, the vote or the SBS is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from advisor.baselines import Selector
from advisor.metrics import choose, task_losses
from advisor.table import PerfTable

INNER_FOLDS = 3


def inner_folds(table: PerfTable, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped by model where the table knows models (cold start is the hard case), else by task."""
    labels = table.groups.get("model")
    if labels is None or len(np.unique(labels)) < n_folds:
        labels = np.array(table.tasks)
    groups = np.random.default_rng(seed).permutation(np.unique(labels))
    fold_of = {g: i % n_folds for i, g in enumerate(groups)}
    assigned = np.array([fold_of[g] for g in labels])
    return [(np.flatnonzero(assigned != f), np.flatnonzero(assigned == f)) for f in range(n_folds)]


class InnerChoice:
    def __init__(self, options: Mapping[str, Callable[[], Selector]], n_folds: int = INNER_FOLDS, seed: int = 0):
        self.options = options
        self.n_folds = n_folds
        self.seed = seed

    def fit(self, table: PerfTable) -> InnerChoice:
        names = list(self.options)
        self.inner_loss_: dict[str, float] = {}
        if len(table.tasks) >= 2 * self.n_folds:
            chosen = {name: np.zeros(len(table.tasks), dtype=int) for name in names}
            for train, test in inner_folds(table, self.n_folds, self.seed):
                train_table, test_table = table.subset(train), table.subset(test)
                for name in names:
                    scores = self.options[name]().fit(train_table).scores(test_table)
                    chosen[name][test] = choose(scores, test_table.available)
            self.inner_loss_ = {name: float(task_losses(table, chosen[name]).mean()) for name in names}
        # Ties (and too small a table to split) go to the first option: the pooled learner.
        self.chosen_ = min(names, key=lambda n: (self.inner_loss_.get(n, 0.0), names.index(n)))
        self.selector_ = self.options[self.chosen_]().fit(table)
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        return self.selector_.scores(table)
