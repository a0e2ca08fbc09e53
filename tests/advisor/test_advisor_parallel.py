"""Folds fitted in worker processes give the same evaluation as folds fitted in turn."""

from typing import Any

import pytest

from advisor.evaluate import evaluate_table
from advisor.synthetic import synthetic_records
from advisor.table import table_from_records


@pytest.mark.slow
def test_parallel_folds_give_the_same_figures():
    table = table_from_records(list(synthetic_records(n_models=5, n_workloads=3, n_hardware=2, seed=3)))
    options: dict[str, Any] = {
        "splits": ("model",),
        "seeds": 1,
        "size": "small",
        "selectors": ("pairwise",),
        "with_coverage": False,
    }
    in_turn = evaluate_table(table, **options)
    in_parallel = evaluate_table(table, **options, jobs=2)
    assert in_parallel["splits"] == in_turn["splits"]
    assert in_turn["splits"]["model"]["pairwise"]["mean_regret"]["mean"] >= 1.0
