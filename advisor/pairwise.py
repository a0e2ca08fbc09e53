"""Pairwise cost-sensitive classification (the approach of SATzilla'12 and other strong selectors).

One classifier per candidate pair predicts which of the two is better on a task, trained on
the tasks where both ran and weighted by how much the choice matters (their utility
difference); at prediction time every pair whose members are both available casts a vote.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from sklearn.impute import SimpleImputer

from advisor.baselines import small_table_trees
from advisor.metrics import TIE_TOLERANCE
from advisor.table import PerfTable

# Caps on each pair forest's trees. Their cost per split grows with every feature's bins (LightGBM builds
# the histograms of all features, not only the node's sampled ones), and on the 1 000-task LCDB table
# the pair forests were most of the evaluation's time. Neither binds on the profile grids (no feature
# there takes more than 13 distinct values; pair trees grow at most 17 leaves): their figures are the
# same with and without the caps (measured, docs/advisor.md).
MAX_BINS = 63
MAX_LEAVES = 32


class PairwiseVoting:
    def __init__(self, n_estimators: int = 20, min_pair_tasks: int = 6, max_candidates: int = 12, seed: int = 0):
        self.n_estimators = n_estimators
        self.min_pair_tasks = min_pair_tasks
        self.max_candidates = max_candidates  # pairs only among these many competitive candidates
        self.seed = seed

    def fit(self, table: PerfTable) -> PairwiseVoting:
        self.imputer_ = SimpleImputer(strategy="median", keep_empty_features=True).fit(table.task_x)
        features = self.imputer_.transform(table.task_x)
        utility, available = table.utility, table.available
        self.pairs_ = []
        for a, b in combinations(competitive(table, self.max_candidates), 2):
            rows = np.flatnonzero(available[:, a] & available[:, b])
            if len(rows) < self.min_pair_tasks:
                continue
            difference = utility[rows, a] - utility[rows, b]
            a_wins = difference > 0
            if a_wins.all() or not a_wins.any():
                self.pairs_.append((a, b, float(a_wins[0])))  # one side always won: a fixed vote
                continue
            # A random forest (bootstrap-like row samples, √features per split, deep trees, votes averaged).
            model = small_table_trees(
                features[rows],
                a_wins.astype(float),
                self.n_estimators,
                self.seed,
                weight=np.abs(difference) + 1e-3,  # a tie still counts a little (LightGBM needs a hessian)
                objective="binary",
                boosting="rf",
                bagging_fraction=0.632,
                bagging_freq=1,
                feature_fraction_bynode=max(1, int(np.sqrt(features.shape[1]))) / features.shape[1],
                num_leaves=MAX_LEAVES,
                max_bin=MAX_BINS,
                min_data_in_leaf=2,
            )
            self.pairs_.append((a, b, model))
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        features = self.imputer_.transform(table.task_x)
        available = table.available
        votes = np.zeros(table.values.shape)
        for a, b, model in self.pairs_:
            p_a = np.full(len(features), model) if isinstance(model, float) else model.predict(features, num_threads=1)
            both = available[:, a] & available[:, b]
            votes[:, a] += p_a * both
            votes[:, b] += (1 - p_a) * both
        return votes


def competitive(table: PerfTable, limit: int) -> list[int]:
    """The candidates worth a classifier: best (within 3 %) on some training task, most often first, up to ``limit``.

    With 37 candidates there are 666 pairs, most between methods that never win anywhere; their
    votes cannot change a choice, and fitting them was most of the evaluation's time.
    """
    utility = np.where(table.available, table.utility, -np.inf)
    best = utility.max(axis=1, keepdims=True)
    wins = (utility >= best - np.log(1 + TIE_TOLERANCE)).sum(axis=0)
    order = [int(j) for j in np.argsort(-wins, kind="stable") if wins[j] > 0]
    return sorted(order[:limit])
