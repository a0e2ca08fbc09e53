"""Interval coverage is measured on held-out cells and the conformal offset brings it to the nominal 80 %."""

from dataclasses import replace

import numpy as np

from advisor.evaluate import cv_folds
from advisor.intervals import NOMINAL, calibration_folds, conformal_offset, coverage
from advisor.synthetic import synthetic_records
from advisor.table import table_from_records


def test_conformal_offset_is_the_corrected_quantile_of_the_scores():
    scores = np.arange(10, dtype=float)  # 80 % × (1 + 1/10) = 0.88 → the 9th smallest
    assert conformal_offset(scores) == 8.0
    assert conformal_offset(np.array([])) == 0.0


def test_calibrated_coverage_on_unseen_models_is_near_nominal_and_closer_than_raw():
    table = table_from_records(synthetic_records(n_models=10, n_workloads=4, n_hardware=3, noise=0.1, seed=2))
    found = coverage(table, cv_folds(table, "model", 0, 5), n_estimators=60)
    speed = found["log_speedup"]
    assert speed["cells"] > 500 and speed["nominal"] == NOMINAL
    assert abs(speed["calibrated"] - NOMINAL) <= 0.07
    assert abs(speed["calibrated"] - NOMINAL) < abs(speed["raw"] - NOMINAL)


def _with_model_groups(table, sizes):
    """The table's first sum(sizes) tasks, grouped into "models" of the given task counts."""
    labels = np.concatenate([np.full(n, f"m{i}") for i, n in enumerate(sizes)])
    small = table.subset(np.arange(len(labels)))
    return replace(small, groups={**small.groups, "model": labels})


def test_calibration_folds_keep_a_dominant_model_alone_and_balance_the_rest():
    """One model with 40 % of the tasks must not share its fold (what made unseen-model memory cover 0.686)."""
    table = table_from_records(synthetic_records(n_models=10, n_workloads=4, n_hardware=3, seed=2))
    grouped = _with_model_groups(table, [40, 16, 12, 10, 8, 6, 4, 2, 1, 1])
    labels = grouped.groups["model"]
    for seed in range(4):
        folds = calibration_folds(grouped, "model", seed, 5)
        assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(labels)))
        for train, test in folds:
            assert not set(labels[train]) & set(labels[test])
        sizes = sorted(len(test) for _, test in folds)
        big = next(test for _, test in folds if "m0" in set(labels[test]))
        assert set(labels[big]) == {"m0"}
        assert sizes[-1] == 40 and sizes[-2] - sizes[0] <= 4  # the rest within the largest group that moves


def test_calibration_folds_are_the_evaluation_folds_where_groups_are_equal():
    table = table_from_records(synthetic_records(n_models=6, n_workloads=3, n_hardware=2, seed=2))
    for split in ("random", "hardware"):
        for seed in range(3):
            mine = calibration_folds(table, split, seed, 5)
            theirs = cv_folds(table, split, seed, 5)
            assert [t.tolist() for _, t in mine] == [t.tolist() for _, t in theirs]


def test_the_evaluation_measures_coverage_on_the_calibration_folds(monkeypatch):
    import advisor.evaluate as evaluate

    seen = []

    def spy(table, split, seed, n_folds=5):
        seen.append(split)
        return calibration_folds(table, split, seed, n_folds)

    monkeypatch.setattr(evaluate, "calibration_folds", spy)
    small = table_from_records(synthetic_records(n_models=4, n_workloads=2, n_hardware=2, seed=2))
    report = evaluate.evaluate_table(small, splits=("model",), seeds=1, n_folds=2, size="small", selectors=("sbs",))
    assert seen == ["model"] and report["splits"]["model"]["_coverage"]
