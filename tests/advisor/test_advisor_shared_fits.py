"""What makes the evaluation cheaper must not change what it measures: shared fits, batched ALS."""

import numpy as np

from advisor.alors import _solve_rows
from advisor.evaluate import LEARNER, PLAIN, cv_folds, selector_factories
from advisor.learner import MetaLearner
from advisor.pairwise import PairwiseVoting
from advisor.synthetic import synthetic_records
from advisor.table import table_from_records

SHARING = ("pairwise", LEARNER, PLAIN, "lightgbm_unguarded")


def test_rows_sharing_a_fit_score_as_their_own_fits_and_each_is_fitted_once(monkeypatch):
    table = table_from_records(synthetic_records(n_models=6, n_workloads=3, n_hardware=2, seed=1))
    train, test = cv_folds(table, "model", seed=0, n_folds=3)[0]
    train_table, test_table = table.subset(train), table.subset(test)
    alone = {name: selector_factories("small")[name](0).fit(train_table).scores(test_table) for name in SHARING}

    fits_on_the_fold: list[str] = []
    for selector in (MetaLearner, PairwiseVoting):
        monkeypatch.setattr(selector, "fit", _counting(selector.fit, train_table, fits_on_the_fold))
    shared = selector_factories("small", fitted={})
    for name in SHARING:
        assert np.array_equal(shared[name](0).fit(train_table).scores(test_table), alone[name]), name
    # Four rows and the inner-CV choice's refit on the training fold: one learner, one pairwise vote.
    assert sorted(fits_on_the_fold) == ["MetaLearner", "PairwiseVoting"]


def _counting(fit, table, calls: list[str]):
    def counted(self, fitted_on):
        if fitted_on is table:
            calls.append(type(self).__name__)
        return fit(self, fitted_on)

    return counted


def test_batched_ridge_solves_are_bit_for_bit_the_per_row_ones():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(300, 9))
    matrix[rng.random(matrix.shape) < 0.3] = np.nan  # many patterns of observed cells, some rows empty
    matrix[:40] = rng.normal(size=(40, 9))  # and a block that observes every cell
    observed, filled = ~np.isnan(matrix), np.nan_to_num(matrix)
    other, ridge = rng.normal(size=(9, 4)), 0.1 * np.eye(4)
    per_row = np.array(
        [
            np.linalg.solve(other[seen].T @ other[seen] + ridge, other[seen].T @ filled[i, seen])
            for i, seen in enumerate(observed)
        ]
    )
    assert np.array_equal(_solve_rows(filled, observed, other, ridge), per_row)
