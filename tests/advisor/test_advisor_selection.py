"""The learner must find the feature-dependent best method on tasks whose models it never saw."""

import numpy as np
import pytest

from advisor.baselines import SingleBest
from advisor.evaluate import cv_folds, evaluate_table
from advisor.learner import MetaLearner
from advisor.metrics import choose, top1
from advisor.synthetic import synthetic_records
from advisor.table import table_from_records


@pytest.fixture(scope="module")
def table():
    return table_from_records(synthetic_records(n_models=24, n_workloads=6, n_hardware=6, noise=0.01, seed=3))


def _held_out_top1(table, make, split="model", seed=0):
    scores = np.zeros(table.values.shape)
    for train, test in cv_folds(table, split, seed, n_folds=4):
        scores[test] = make().fit(table.subset(train)).scores(table.subset(test))
    return top1(table, choose(scores, table.available))


def test_learner_finds_the_best_method_on_unseen_models_while_sbs_does_not(table):
    chance = float(np.mean(1.0 / table.available.sum(axis=1)))
    learner = _held_out_top1(table, lambda: MetaLearner(n_estimators=400, learning_rate=0.1))
    sbs = _held_out_top1(table, SingleBest)
    assert learner >= 0.9
    assert sbs <= chance + 0.15


def test_a_learner_blind_to_the_features_fails_the_same_bar(table):
    rng = np.random.default_rng(0)
    shuffled = table.task_x[rng.permutation(len(table.tasks))]
    blind = table.__class__(**{**table.__dict__, "task_x": shuffled})
    assert _held_out_top1(blind, lambda: MetaLearner(n_estimators=400, learning_rate=0.1)) < 0.6


def test_cv_folds_never_share_a_group_between_train_and_test(table):
    for split in ("model", "hardware"):
        folds = cv_folds(table, split, seed=1)
        covered = np.sort(np.concatenate([test for _, test in folds]))
        assert covered.tolist() == list(range(len(table.tasks)))
        for train, test in folds:
            assert not set(table.groups[split][train]) & set(table.groups[split][test])


def test_evaluate_reports_every_selector_with_spread_over_seeds():
    small = table_from_records(synthetic_records(n_models=6, n_workloads=3, n_hardware=3, seed=2))
    report = evaluate_table(
        small, splits=("model", "hardware"), seeds=2, n_folds=3, size="small", selectors=("knn", "lightgbm")
    )
    for split in ("model", "hardware"):
        results = report["splits"][split]
        assert (
            set(results) == {"sbs", "knn", "lightgbm", "vbs", "_seeds", "_folds", "_coverage"}
            and results["_seeds"] == 2
        )
        assert results["_folds"] == 3
        assert results["vbs"]["gap_closed"]["mean"] == 1.0 and results["sbs"]["gap_closed"]["mean"] == 0.0
        assert results["vbs"]["top1"]["mean"] == 1.0 and results["vbs"]["mean_regret"]["mean"] == 1.0
        assert results["lightgbm"]["mean_regret"]["mean"] >= 1.0
        assert results["lightgbm"]["top1"]["std"] >= 0.0
    assert "SBS" in report["gap_direction"]


def test_measured_baseline_runs_fold_into_the_implicit_baseline(small_records):
    baseline = dict(
        small_records[0],
        method_id="baseline",
        speedup=1.0,
        run_id="b0",
        config={"method": "baseline", "version": 1, "params": {}},
    )
    table = table_from_records([baseline] + small_records[:7])
    assert table.candidates[0] == "baseline" and sum(c.startswith("baseline") for c in table.candidates) == 1
    assert table.values[0, 0] == 1.0


def test_risk_aversion_penalises_wide_intervals(table):
    train = table.subset(np.arange(0, len(table.tasks), 2))
    neutral = MetaLearner(n_estimators=50, quantiles=(0.1, 0.9)).fit(train)
    averse = MetaLearner(n_estimators=50, quantiles=(0.1, 0.9), risk_aversion=0.5).fit(train)
    width = np.abs(
        neutral.predict(table.task_x, table.cand_x, "q0.9") - neutral.predict(table.task_x, table.cand_x, "q0.1")
    )
    assert np.allclose(averse.scores(table), neutral.scores(table) - 0.5 * width)
