"""The inner-CV choice among learner, pairwise vote and SBS: inner folds like the outer split, no switch on noise."""

import numpy as np
import pytest

from advisor.evaluate import selector_factories
from advisor.metrics import loss_matrix
from advisor.robust import InnerChoice, clustered_se, inner_folds
from advisor.synthetic import synthetic_records
from advisor.table import table_from_records


@pytest.fixture(scope="module")
def table():
    return table_from_records(synthetic_records(n_models=8, n_workloads=3, n_hardware=2, seed=5))


class Picks:
    """A selector that picks a fixed candidate per task (by task id), whatever it was fitted on."""

    def __init__(self, table, chosen: np.ndarray):
        self.by_task = dict(zip(table.tasks, chosen.tolist(), strict=True))

    def fit(self, _table):
        return self

    def scores(self, table):
        scores = np.zeros(table.values.shape)
        scores[np.arange(len(table.tasks)), [self.by_task[t] for t in table.tasks]] = 1.0
        return scores


def _first_available(table) -> np.ndarray:
    return np.argmax(table.available, axis=1)


def test_inner_folds_mirror_the_outer_split(table):
    models = table.groups["model"]
    for train, test in inner_folds(table, 3, seed=0, split="model"):
        assert not set(models[train]) & set(models[test])
    random = inner_folds(table, 3, seed=0, split="random")
    assert any(set(models[train]) & set(models[test]) for train, test in random)  # tasks, not models
    one_class = table.subset(np.flatnonzero(table.groups["hardware"] == table.groups["hardware"][0]))
    by_task = inner_folds(one_class, 3, seed=0, split="hardware")  # one hardware class: split by task
    assert sorted(np.concatenate([test for _, test in by_task]).tolist()) == list(range(len(one_class.tasks)))
    assert all(len(test) > 0 for _, test in by_task)


def test_the_evaluation_gives_its_outer_split_to_the_inner_choice():
    for split in ("model", "random", "hardware"):
        assert selector_factories("small", split=split)["lightgbm"](0).split == split


def test_clustered_standard_error_counts_a_group_as_one_unit():
    d = np.array([1.0, 1.0, -1.0, -1.0])
    assert clustered_se(d, np.array(["a", "b", "c", "d"])) == pytest.approx(np.sqrt(4.0) / 4)
    assert clustered_se(d, np.array(["a", "a", "b", "b"])) == pytest.approx(np.sqrt(8.0) / 4)


def test_an_option_better_only_by_noise_is_not_chosen(table):
    """Better on some tasks, worse on others, a hair better on the mean: the first option keeps answering."""
    first = _first_available(table)
    losses = loss_matrix(table)
    diff = losses - losses[np.arange(len(table.tasks)), first][:, None]  # NaN where unavailable
    noisy, total = first.copy(), 0.0
    for i in range(len(table.tasks)):  # alternate the largest gain and the largest loss, the running sum near 0
        j = int(np.nanargmax(diff[i])) if total < 0 else int(np.nanargmin(diff[i]))
        noisy[i], total = j, total + diff[i, j]
    if total >= 0:  # end a hair ahead: the argmin of the inner losses would switch
        i = int(np.argmax(np.nanmin(diff, axis=1) < 0))
        total -= diff[i, noisy[i]] - np.nanmin(diff[i])
        noisy[i] = int(np.nanargmin(diff[i]))
    assert total < 0
    chooser = InnerChoice({"first": lambda: Picks(table, first), "noisy": lambda: Picks(table, noisy)}).fit(table)
    assert chooser.inner_loss_["noisy"] < chooser.inner_loss_["first"]
    assert chooser.inner_loss_["noisy"] + chooser.inner_se_["noisy"] >= chooser.inner_loss_["first"]
    assert chooser.chosen_ == "first"


def test_an_option_better_everywhere_is_chosen(table):
    first = _first_available(table)
    best = np.nanargmin(loss_matrix(table), axis=1)
    assert (best != first).sum() > len(table.tasks) // 4
    chooser = InnerChoice({"first": lambda: Picks(table, first), "oracle": lambda: Picks(table, best)}).fit(table)
    assert chooser.chosen_ == "oracle"


def test_too_small_a_table_answers_with_the_first_option(table):
    tiny = table.subset(np.arange(4))
    chooser = InnerChoice(
        {"first": lambda: Picks(tiny, np.zeros(4, int)), "other": lambda: Picks(tiny, np.zeros(4, int))}
    )
    assert chooser.fit(tiny).chosen_ == "first" and chooser.inner_loss_ == {}
