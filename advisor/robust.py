"""Never worse than the best of {learner, pairwise selector, SBS}: choose among them by inner CV.

On the training table only, each option is cross-validated with inner folds that mirror the
outer split (grouped by model for unseen models, by task for random tasks; a training table
with too few groups of the split's kind, as one hardware class, is split by task). The option
with the lowest mean loss on the inner held-out tasks is refitted on the whole training table
and answers — if it beats the first option (the pooled learner) by more than one standard
error of their paired loss difference, the standard error taken over the inner folds' groups
(a held-out model's tasks move together). Otherwise the first option answers: the inner
estimate on a few hundred tasks is noisy, and a switch on noise lost 0.12 of the gap closed on
unseen models of the seed grid (docs/advisor.md). Nothing about the test tasks is seen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from advisor.baselines import Selector
from advisor.metrics import choose, task_losses
from advisor.table import PerfTable

INNER_FOLDS = 3


def inner_groups(table: PerfTable, n_folds: int, split: str = "model") -> np.ndarray:
    """Each task's inner-CV group: its ``split`` group where the table has enough of them, else the task itself.

    An outer random split is mirrored by random inner folds; a hardware split's training table
    holds too few hardware classes to group by, and falls back to tasks.
    """
    labels = table.groups.get(split) if split != "random" else None
    if labels is None or len(np.unique(labels)) < n_folds:
        return np.array(table.tasks)
    return np.asarray(labels)


def inner_folds(table: PerfTable, n_folds: int, seed: int, split: str = "model") -> list[tuple[np.ndarray, np.ndarray]]:
    """Whole inner groups (inner_groups) per fold, in the seed's random order."""
    labels = inner_groups(table, n_folds, split)
    groups = np.random.default_rng(seed).permutation(np.unique(labels))
    fold_of = {g: i % n_folds for i, g in enumerate(groups)}
    assigned = np.array([fold_of[g] for g in labels])
    return [(np.flatnonzero(assigned != f), np.flatnonzero(assigned == f)) for f in range(n_folds)]


def clustered_se(differences: np.ndarray, labels: np.ndarray) -> float:
    """Standard error of the mean of ``differences`` with each label's tasks as one unit (cluster-robust)."""
    _, group = np.unique(labels, return_inverse=True)
    sums = np.bincount(group, weights=differences - differences.mean())
    return float(np.sqrt(np.sum(sums**2)) / len(differences))


class InnerChoice:
    def __init__(
        self,
        options: Mapping[str, Callable[[], Selector]],
        n_folds: int = INNER_FOLDS,
        seed: int = 0,
        split: str = "model",
    ):
        self.options = options
        self.n_folds = n_folds
        self.seed = seed
        self.split = split  # the outer split's kind, which the inner folds mirror

    def fit(self, table: PerfTable) -> InnerChoice:
        names = list(self.options)
        self.inner_loss_: dict[str, float] = {}
        self.inner_se_: dict[str, float] = {}  # per option: the standard error of its loss minus the first option's
        self.chosen_ = names[0]  # too small a table to split: the first option, the pooled learner
        if len(table.tasks) >= 2 * self.n_folds:
            chosen = {name: np.zeros(len(table.tasks), dtype=int) for name in names}
            for train, test in inner_folds(table, self.n_folds, self.seed, self.split):
                train_table, test_table = table.subset(train), table.subset(test)
                for name in names:
                    scores = self.options[name]().fit(train_table).scores(test_table)
                    chosen[name][test] = choose(scores, test_table.available)
            losses = {name: task_losses(table, chosen[name]) for name in names}
            labels = inner_groups(table, self.n_folds, self.split)
            self.inner_loss_ = {name: float(losses[name].mean()) for name in names}
            self.inner_se_ = {name: clustered_se(losses[name] - losses[names[0]], labels) for name in names}
            best = min(names, key=lambda n: (self.inner_loss_[n], names.index(n)))
            if self.inner_loss_[best] + self.inner_se_[best] < self.inner_loss_[names[0]]:
                self.chosen_ = best
        self.selector_ = self.options[self.chosen_]().fit(table)
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        return self.selector_.scores(table)
