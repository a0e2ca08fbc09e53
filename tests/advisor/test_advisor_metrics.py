import numpy as np
import pytest

from advisor.baselines import Oracle, SingleBest
from advisor.metrics import (
    choose,
    gap_closed,
    loss_matrix,
    mean_regret,
    ndcg_at,
    task_losses,
    top1,
)
from advisor.table import PerfTable

NAN = np.nan


def speedup_table(values) -> PerfTable:
    values = np.array(values, dtype=float)
    n, m = values.shape
    return PerfTable(
        name="t",
        tasks=tuple(f"t{i}" for i in range(n)),
        task_x=np.zeros((n, 1)),
        feature_names=("x",),
        candidates=tuple(f"m{j}" for j in range(m)),
        cand_x=np.eye(m),
        cand_feature_names=tuple(f"c{j}" for j in range(m)),
        values=values,
    )


def test_top1_regret_and_tolerance_by_hand():
    table = speedup_table([[2.0, 1.0, 1.98], [1.0, 4.0, NAN]])
    chosen = np.array([2, 0])
    assert top1(table, chosen) == 0.0
    assert top1(table, chosen, tolerance=0.03) == 0.5  # 1.98 is within 3 % of 2.0; 1.0 is not of 4.0
    assert mean_regret(table, chosen) == pytest.approx((2.0 / 1.98 + 4.0) / 2)
    assert task_losses(table, np.array([0, 1])).tolist() == [1.0, 1.0]


def test_choosing_an_unavailable_candidate_is_an_error():
    table = speedup_table([[2.0, NAN]])
    with pytest.raises(ValueError, match="unavailable"):
        task_losses(table, np.array([1]))
    assert choose(np.array([[0.0, 5.0]]), table.available).tolist() == [0]


def test_gap_closed_direction():
    assert gap_closed(loss_selector=1.0, loss_sbs=2.0, loss_vbs=1.0) == 1.0
    assert gap_closed(loss_selector=2.0, loss_sbs=2.0, loss_vbs=1.0) == 0.0
    assert gap_closed(loss_selector=1.25, loss_sbs=2.0, loss_vbs=1.0) == 0.75
    assert gap_closed(loss_selector=3.0, loss_sbs=2.0, loss_vbs=1.0) == -1.0


def test_sbs_is_the_best_average_and_oracle_is_perfect():
    table = speedup_table([[2.0, 1.0], [2.0, 1.0], [1.0, 1.5]])
    sbs = SingleBest().fit(table).scores(table)
    assert choose(sbs, table.available).tolist() == [0, 0, 0]
    oracle = choose(Oracle().fit(table).scores(table), table.available)
    assert oracle.tolist() == [0, 0, 1] and top1(table, oracle) == 1.0
    assert np.isnan(loss_matrix(speedup_table([[1.0, NAN]]))[0, 1])


def test_ndcg_is_one_for_the_true_order_and_lower_for_the_reverse():
    table = speedup_table([[1.0, 2.0, 4.0, 8.0]])
    assert ndcg_at(table, np.log(table.values), 3) == pytest.approx(1.0)
    gains = np.array([0, 1, 2, 3]) / 3  # log2 utilities 0..3, min-max scaled
    discounts = 1 / np.log2([2, 3, 4])
    expected = gains[[0, 1, 2]] @ discounts / (gains[[3, 2, 1]] @ discounts)
    assert ndcg_at(table, -np.log(table.values), 3) == pytest.approx(expected)
