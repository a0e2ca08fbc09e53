"""`plan: auto` profiling jobs: the planner's cells as job items, in a real (migrated SQLite) store."""

import pytest

from advisor.synthetic import synthetic_records
from api.errors import Unprocessable
from api.training import planned_items
from executors.families import workload_from_json
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade
from profiles.transfer import add_records

MODEL = "syn-lm-000"
HIDDEN = "sys.compile"  # never measured on MODEL: the only cells the planner may pick there


@pytest.fixture
def store():
    upgrade(default_engine())
    records = [
        r
        for r in synthetic_records(n_models=4, n_workloads=3, n_hardware=2, seed=4)
        if not (r["model_id"] == MODEL and r["method_id"] == HIDDEN)
    ]
    with session_scope() as session:
        add_records(session, enumerate(records, start=1))
    return records


def _class_targets(records):
    return [{"kind": "class", "name": c} for c in sorted({r["hardware_class"] for r in records})]


def test_auto_plan_measures_only_unmeasured_cells_of_the_named_model(store):
    with session_scope() as session:
        items = planned_items(session, [MODEL], None, None, _class_targets(store), max_cells=4, reps=5)
    assert items and sum(len(i["methods"]) for i in items) <= 4
    measured = {(r["workload_id"], r["hardware_class"]) for r in store if r["model_id"] == MODEL}
    for item in items:
        assert item["model"] == MODEL and item["reps"] == 5 and item["kind"] == "profile"
        assert [m["method"] for m in item["methods"]] == [HIDDEN]
        # the shape is one the store knows for this model and class: the new record lands in that task
        assert (workload_from_json(item["workload"]).id, item["target"]["name"]) in measured
    assert len({(i["target"]["name"], workload_from_json(i["workload"]).id) for i in items}) == len(items)


def test_auto_plan_says_why_it_has_nothing_to_measure(store):
    targets = _class_targets(store)
    with session_scope() as session:
        with pytest.raises(Unprocessable, match="no unmeasured cell"):
            planned_items(session, [MODEL], {"lm.spec.swift"}, None, targets, max_cells=4, reps=5)
        with pytest.raises(Unprocessable, match="no stored profiles"):
            planned_items(session, ["zoo:lm-1m"], None, None, targets, max_cells=4, reps=5)
        with pytest.raises(Unprocessable, match="not pool"):
            planned_items(session, [MODEL], None, None, [{"kind": "pool", "name": "pool"}], max_cells=4, reps=5)
