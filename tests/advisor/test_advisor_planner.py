"""The planner's expected improvement, its replay on a complete grid, and the inner-CV choice of selector."""

import numpy as np

from advisor.baselines import SingleBest
from advisor.planner import expected_improvement, plan_next, reached, replay
from advisor.robust import InnerChoice
from advisor.synthetic import synthetic_records
from advisor.table import table_from_records


def _timed(records):
    return [r | {"setup_s": 0.5, "metrics": {"latencies_s": [0.01] * 5}} for r in records]


def test_expected_improvement_grows_with_mean_and_uncertainty_and_is_never_negative():
    best = np.zeros(3)
    assert np.all(expected_improvement(np.array([-1.0, 0.0, 1.0]), np.full(3, 0.1), best) >= 0)
    low, high = expected_improvement(np.array([0.0, 0.0]), np.array([0.05, 0.5]), np.zeros(2))
    assert high > low
    far, near = expected_improvement(np.array([-2.0, 1.0]), np.array([0.1, 0.1]), np.zeros(2))
    assert far < 1e-6 < near


def test_replay_reveals_everything_and_every_strategy_ends_at_the_oracle():
    records = _timed(list(synthetic_records(n_models=5, n_workloads=2, n_hardware=2, seed=9)))
    out = replay(records, seed=0, steps=3)
    assert set(out["curves"]) == {"planner", "random", "round_robin"}
    for curve in out["curves"].values():
        fractions = [p["fraction"] for p in curve]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        assert curve[-1]["regret"] == 1.0 and curve[-1]["cells"] == out["cells"]
        assert reached(curve, 1.0) <= 1.0
    assert out["curves"]["planner"][0] == out["curves"]["random"][0]  # the same start for every strategy


def test_plan_proposes_only_untried_cells_of_methods_measured_on_that_kind():
    records = _timed(list(synthetic_records(n_models=4, n_workloads=2, n_hardware=2, seed=10)))
    held = records[0]
    hidden = [r for r in records if not (r["model_id"] == held["model_id"] and r["method_id"] == "sys.compile")]
    proposals = plan_next(hidden, n=50)
    assert proposals and all(p["method"] == "sys.compile" for p in proposals)
    assert {p["model"] for p in proposals} == {held["model_id"]}
    gains = [p["expected_gain_per_s"] for p in proposals]
    assert gains == sorted(gains, reverse=True)


def test_inner_choice_falls_back_to_the_single_best_where_the_learner_cannot_learn():
    records = list(synthetic_records(n_models=6, n_workloads=2, n_hardware=2, seed=11))
    table = table_from_records(records)
    noise = np.random.default_rng(0).normal(size=table.task_x.shape)  # features that say nothing
    from dataclasses import replace

    blind = replace(table, task_x=noise)

    class Contrarian:  # ranks the candidates upside down: a learner that learnt the wrong thing
        def fit(self, t):
            self.sbs = SingleBest().fit(t)
            return self

        def scores(self, t):
            return -self.sbs.scores(t)

    chooser = InnerChoice({"contrarian": Contrarian, "sbs": SingleBest}).fit(blind)
    assert chooser.chosen_ == "sbs" and chooser.inner_loss_["sbs"] < chooser.inner_loss_["contrarian"]
    assert np.array_equal(chooser.scores(blind), SingleBest().fit(blind).scores(blind))
