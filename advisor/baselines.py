"""Classic algorithm-selection baselines, all behind one interface.

A selector has ``fit(table) -> self`` and ``scores(table) -> n_tasks × n_candidates`` (higher =
better); only the oracle may look at a test table's values. The learners see task features
only: a candidate's identity is its column.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from advisor.metrics import loss_matrix
from advisor.table import PerfTable


class Selector(Protocol):
    def fit(self, table: PerfTable) -> Selector: ...

    def scores(self, table: PerfTable) -> np.ndarray: ...


def scaled_features():
    """Median-impute then standardise: ISAC, kNN and ALORS's distances need comparable scales."""
    return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())


def filled_utility(table: PerfTable) -> np.ndarray:
    """Utility with unavailable cells set to the task's worst, for learners that need full rows."""
    utility = table.utility
    worst = np.nanmin(utility, axis=1, keepdims=True)
    return np.where(np.isnan(utility), worst, utility)


def single_best_scores(table: PerfTable) -> np.ndarray:
    """Negative mean loss per candidate; where it is unavailable a task counts its worst loss."""
    losses = loss_matrix(table)
    worst = np.nanmax(losses, axis=1, keepdims=True)
    return -np.where(np.isnan(losses), worst, losses).mean(axis=0)


class RandomSelector:
    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, table: PerfTable) -> RandomSelector:
        self.rng_ = np.random.default_rng(self.seed)
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        return self.rng_.random(table.values.shape)


class SingleBest:
    """SBS: one ranking of the candidates for every task (falling back down it when unavailable)."""

    def fit(self, table: PerfTable) -> SingleBest:
        self.ranking_ = single_best_scores(table)
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        return np.tile(self.ranking_, (len(table.tasks), 1))


class Oracle:
    """VBS: reads the true values of the tasks it scores; the upper bound, not a selector."""

    def fit(self, table: PerfTable) -> Oracle:
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        return np.nan_to_num(table.utility, nan=-np.inf)


class ISAC:
    """Instance-specific algorithm configuration: cluster normalised features, best per cluster."""

    def __init__(self, n_clusters: int | None = None, seed: int = 0):
        self.n_clusters = n_clusters
        self.seed = seed

    def fit(self, table: PerfTable) -> ISAC:
        n = len(table.tasks)
        k = self.n_clusters or int(np.clip(n // 30, 2, 12))
        self.scaler_ = scaled_features().fit(table.task_x)
        self.kmeans_ = KMeans(n_clusters=min(k, n), n_init=4, random_state=self.seed)
        labels = self.kmeans_.fit_predict(self.scaler_.transform(table.task_x))
        fallback = single_best_scores(table)
        self.cluster_scores_ = np.array(
            [
                single_best_scores(table.subset(np.flatnonzero(labels == c))) if (labels == c).any() else fallback
                for c in range(self.kmeans_.n_clusters)
            ]
        )
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        return self.cluster_scores_[self.kmeans_.predict(self.scaler_.transform(table.task_x))]


class NearestNeighbours:
    """kNN: the average utility of the k most similar training tasks, per candidate."""

    def __init__(self, n_neighbors: int = 7):
        self.n_neighbors = n_neighbors

    def fit(self, table: PerfTable) -> NearestNeighbours:
        self.scaler_ = scaled_features().fit(table.task_x)
        self.index_ = NearestNeighbors(n_neighbors=min(self.n_neighbors, len(table.tasks)))
        self.index_.fit(self.scaler_.transform(table.task_x))
        utility = filled_utility(table)
        # Relative to the task's best, so a fast machine's neighbours do not dominate the average.
        self.regret_ = utility - utility.max(axis=1, keepdims=True)
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        distance, neighbours = self.index_.kneighbors(self.scaler_.transform(table.task_x))
        weights = 1.0 / (distance + 1e-6)
        return np.einsum("tk,tkm->tm", weights, self.regret_[neighbours]) / weights.sum(axis=1, keepdims=True)


class RandomForestSelector:
    """One multi-output random forest regressing every candidate's utility from task features."""

    def __init__(self, n_estimators: int = 200, seed: int = 0):
        self.n_estimators = n_estimators
        self.seed = seed

    def fit(self, table: PerfTable) -> RandomForestSelector:
        self.imputer_ = SimpleImputer(strategy="median", keep_empty_features=True).fit(table.task_x)
        self.forest_ = RandomForestRegressor(
            n_estimators=self.n_estimators, min_samples_leaf=2, max_features=0.5, random_state=self.seed, n_jobs=1
        )
        self.forest_.fit(self.imputer_.transform(table.task_x), filled_utility(table))
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        return self.forest_.predict(self.imputer_.transform(table.task_x)).reshape(len(table.tasks), -1)


def small_table_trees(features: np.ndarray, target: np.ndarray, rounds: int, seed: int, weight=None, **params):
    """A LightGBM ensemble for a table of tens to thousands of rows: one thread, every row may be a leaf.

    scikit-learn's tree ensembles spend ~5 ms of Python per tree on tables this small; the
    baselines fit hundreds of ensembles per evaluation, which was most of its time.
    """
    import lightgbm as lgb

    settings = {
        "min_data_in_leaf": 1,
        "min_data_in_bin": 1,
        "min_sum_hessian_in_leaf": 1e-6,
        "num_threads": 1,
        "deterministic": True,
        "force_row_wise": True,  # the same trees as column-wise histograms (advisor.learner), a little faster
        "seed": seed,
        "verbosity": -1,
        **params,
    }
    data = lgb.Dataset(features, target, weight=weight, params={"min_data_in_bin": 1, "verbosity": -1})
    # keep_training_booster: no round trip through model text at the end (a tenth of the evaluation's time).
    return lgb.train(settings, data, num_boost_round=rounds, keep_training_booster=True)


class GradientBoostingSelector:
    """Per-candidate gradient-boosted regression of utility (depth 3, rate 0.1, 90 % row samples),
    trained where the candidate ran."""

    def __init__(self, n_estimators: int = 150, seed: int = 0):
        self.n_estimators = n_estimators
        self.seed = seed

    def fit(self, table: PerfTable) -> GradientBoostingSelector:
        utility, available = table.utility, table.available
        self.imputer_ = SimpleImputer(strategy="median", keep_empty_features=True).fit(table.task_x)
        features = self.imputer_.transform(table.task_x)
        self.models_: list = []
        for j in range(len(table.candidates)):
            rows = np.flatnonzero(available[:, j])
            if len(rows) < 10:  # too few runs to learn from: predict their mean
                self.models_.append(float(utility[rows, j].mean()) if len(rows) else float(np.nanmin(utility)))
                continue
            model = small_table_trees(
                features[rows],
                utility[rows, j],
                self.n_estimators,
                self.seed,
                objective="regression",
                max_depth=3,
                num_leaves=8,
                learning_rate=0.1,
                bagging_fraction=0.9,
                bagging_freq=1,
            )
            self.models_.append(model)
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        n, features = len(table.tasks), self.imputer_.transform(table.task_x)
        return np.column_stack(
            [np.full(n, m) if isinstance(m, float) else m.predict(features, num_threads=1) for m in self.models_]
        )
