"""ALORS (Mısır & Sebag): collaborative filtering for algorithm selection.

The task × candidate matrix (per-task min-max scaled utility, with gaps) is factorised into
task and candidate latent factors by alternating least squares on the observed cells only;
a random forest maps task features to the task factors, which handles cold-start tasks.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer

from advisor.table import PerfTable


def scaled_utility(table: PerfTable) -> np.ndarray:
    utility = table.utility
    low = np.nanmin(utility, axis=1, keepdims=True)
    span = np.nanmax(utility, axis=1, keepdims=True) - low
    return (utility - low) / np.where(span > 0, span, 1.0)


def factorise(matrix: np.ndarray, rank: int, l2: float, n_iter: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ALS on the observed (non-NaN) cells: matrix ≈ tasks @ candidates.T."""
    rng = np.random.default_rng(seed)
    observed = ~np.isnan(matrix)
    filled = np.nan_to_num(matrix)
    tasks = rng.normal(0, 0.1, (matrix.shape[0], rank))
    candidates = rng.normal(0, 0.1, (matrix.shape[1], rank))
    ridge = l2 * np.eye(rank)
    for _ in range(n_iter):
        tasks = _solve_rows(filled, observed, candidates, ridge)
        candidates = _solve_rows(filled.T, observed.T, tasks, ridge)
    return tasks, candidates


def _solve_rows(filled: np.ndarray, observed: np.ndarray, other: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    """Each row's ridge solution on its observed cells, batched over the rows that observe the same cells.

    Rows with one pattern share the system matrix (most rows observe every candidate), so a Python loop
    over rows, most of ALORS's fit, becomes one over patterns. The stacked products and solves do the
    per-row arithmetic of a loop in the same order, so the factors are bit for bit what a loop gives.
    """
    out = np.empty((filled.shape[0], other.shape[1]))
    patterns, pattern_of = np.unique(observed, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        rows = np.flatnonzero(pattern_of.ravel() == p)
        seen = other[pattern]
        system = np.broadcast_to(seen.T @ seen + ridge, (len(rows), *ridge.shape))
        right = seen.T @ filled[np.ix_(rows, pattern)][..., None]
        out[rows] = np.linalg.solve(system, right)[..., 0]
    return out


class Alors:
    def __init__(self, rank: int = 4, l2: float = 0.1, n_iter: int = 30, n_estimators: int = 200, seed: int = 0):
        self.rank = rank
        self.l2 = l2
        self.n_iter = n_iter
        self.n_estimators = n_estimators
        self.seed = seed

    def fit(self, table: PerfTable) -> Alors:
        rank = max(1, min(self.rank, len(table.candidates) - 1))
        task_factors, self.candidate_factors_ = factorise(scaled_utility(table), rank, self.l2, self.n_iter, self.seed)
        self.imputer_ = SimpleImputer(strategy="median", keep_empty_features=True).fit(table.task_x)
        self.forest_ = RandomForestRegressor(
            n_estimators=self.n_estimators, min_samples_leaf=2, random_state=self.seed, n_jobs=1
        )
        self.forest_.fit(self.imputer_.transform(table.task_x), task_factors)
        return self

    def scores(self, table: PerfTable) -> np.ndarray:
        latent = self.forest_.predict(self.imputer_.transform(table.task_x)).reshape(len(table.tasks), -1)
        return latent @ self.candidate_factors_.T
