"""External tables: a small ASlib scenario and a long CSV written here, with known answers."""

import math

import numpy as np
import pytest
from aslib_scenario import CUTOFF, write_scenario

from advisor.evaluate import evaluate_table
from advisor.external import load_aslib, load_long_csv, read_arff, read_description


def test_arff_and_description_parsing(tmp_path):
    scenario = write_scenario(tmp_path / "mini")
    names, rows = read_arff(scenario / "feature_values.arff")
    assert names == ["instance_id", "repetition", "f1", "f2"]
    assert rows[0][0] == "inst 0" and rows[0][3] is None
    description = read_description(scenario / "description.txt")
    assert description["performance_measures"] == ["runtime"] and description["algorithm_cutoff_time"] == "100.0"
    assert description["algorithms_deterministic"] == ["fast_small", "fast_large", "slow"]


def test_runtime_scenario_is_scored_by_par10_with_its_own_folds(tmp_path):
    table = load_aslib(write_scenario(tmp_path / "mini"))
    assert table.measure == "cost" and not table.higher_is_better
    assert table.candidates == ("fast_large", "fast_small", "slow")
    assert (table.values[:, 2] == 10 * CUTOFF).all()  # timeouts and crashes cost PAR10
    assert table.folds is not None and sorted(set(table.folds)) == [1, 2, 3]
    f2 = table.feature_names.index("f.f2")
    assert np.isnan(table.task_x[table.tasks.index("inst 0"), f2])

    report = evaluate_table(table, splits=("scenario",), seeds=1, size="small", selectors=("lightgbm", "knn", "random"))
    results = report["splits"]["scenario"]
    assert results["lightgbm"]["gap_closed"]["mean"] > 0.9  # f1 decides the winner: easy to learn
    assert results["random"]["gap_closed"]["mean"] < 0.5
    assert results["vbs"]["mean_loss"]["mean"] == pytest.approx(np.mean(np.min(table.values, axis=1)))


def test_quality_scenario_follows_its_maximize_flag(tmp_path):
    table = load_aslib(write_scenario(tmp_path / "q", maximize=True))
    assert table.measure == "score" and table.higher_is_better
    assert np.isnan(table.values[:, 2]).all()  # a quality run that did not finish has no figure
    f1 = table.task_x[:, table.feature_names.index("f.f1")]
    best = np.array(table.candidates)[np.nanargmax(table.values, axis=1)]
    assert (best == np.where(f1 < 0.5, "fast_small", "fast_large")).all()  # maximize: the higher score wins


def test_long_csv_with_text_features_and_missing_cells(tmp_path):
    path = tmp_path / "perf.csv"
    lines = ["instance_id,method,performance,higher_is_better,size,kind"]
    for i in range(30):
        kind = "a" if i % 2 else "b"
        lines += [f"i{i},m1,{1 + (i % 2)},false,{i},{kind}", f"i{i},m2,{2 - (i % 2) * 0.5},false,{i},{kind}"]
    lines.append("i30,m1,,false,,a")  # a run without a figure and a missing feature
    lines.append("i30,m2,3,false,,a")
    path.write_text("\n".join(lines) + "\n")
    table = load_long_csv(path)
    assert table.measure == "cost" and len(table.tasks) == 31
    assert "f.kind=a" in table.feature_names
    row = table.tasks.index("i30")
    assert math.isnan(table.values[row, 0]) and table.values[row, 1] == 3.0
    assert math.isnan(table.task_x[row, table.feature_names.index("f.size")])


def test_long_csv_needs_its_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("instance,method,performance\nx,m,1\n")
    with pytest.raises(ValueError, match="instance_id"):
        load_long_csv(path)
