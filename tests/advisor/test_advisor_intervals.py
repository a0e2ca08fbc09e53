"""Interval coverage is measured on held-out cells and the conformal offset brings it to the nominal 80 %."""

import numpy as np

from advisor.evaluate import cv_folds
from advisor.intervals import NOMINAL, conformal_offset, coverage
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
