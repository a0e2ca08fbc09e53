"""The loop through the store: advice for an unprofiled task, a measurement of it, a retrain, new advice.

After the retrain the answer for that task and method is the measurement (basis "measured"), so the
prediction has moved to it; before, it was the learner's interpolation.
"""

import pytest

from advisor.recommend import recommend
from advisor.synthetic import synthetic_records
from advisor.versions import active_advisor, train_advisor
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade
from profiles.transfer import add_records


def test_a_measured_run_is_what_the_next_advice_for_that_task_says():
    records = list(synthetic_records(n_models=6, n_workloads=3, n_hardware=2, seed=8))
    held = records[0]
    task = lambda r: (r["model_id"], r["workload_id"], r["hardware_class"])  # noqa: E731
    upgrade(default_engine())
    with session_scope() as session:
        add_records(session, enumerate((r for r in records if task(r) != task(held)), start=1))
        train_advisor(session, size="small", evaluate_splits=())
    method = "quant.int8_dynamic"
    with session_scope() as session:
        found = active_advisor(session)
    assert found is not None
    advisor = found[1]
    before = {
        r.method_id: r
        for r in recommend(advisor, held["model"], held["workload"], [held["node"]], quality_floor=-1).recommendations
    }
    assert before[method].basis == "interpolated"
    measured = next(r for r in records if task(r) == task(held) and r["method_id"] == method)
    surprising = measured | {"speedup": before[method].speedup * 3}  # far outside what was predicted
    assert not before[method].speedup_interval[0] <= surprising["speedup"] <= before[method].speedup_interval[1]
    with session_scope() as session:
        add_records(session, [(10_000, surprising)])
        version = train_advisor(session, size="small", evaluate_splits=(), activate="force")
        assert version.n_profiles == len(records) - sum(task(r) == task(held) for r in records) + 1
    with session_scope() as session:
        found = active_advisor(session)
    assert found is not None
    advisor = found[1]
    after = {
        r.method_id: r
        for r in recommend(advisor, held["model"], held["workload"], [held["node"]], quality_floor=-1).recommendations
    }
    assert after[method].basis == "measured"
    assert after[method].speedup == pytest.approx(surprising["speedup"])
    assert after[method].speedup_interval[0] <= surprising["speedup"] <= after[method].speedup_interval[1]
    assert after["quant.int8_dynamic+lm.spec.swift"].basis == "interpolated"  # unmeasured cells stay predicted
