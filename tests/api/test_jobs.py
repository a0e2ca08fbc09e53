"""The job/item state machine: claims bound to a node and an attempt, reports bound to the claim,
records bound to the claimed item, retries, cancellation, lost nodes waiting for their class."""

from __future__ import annotations

from datetime import timedelta

import pytest
from api_helpers import item_record, profile_item
from sqlmodel import func, select

from api.errors import Conflict, Forbidden, Unprocessable
from api.jobs import cancel_job, claim_item, complete_item, job_public, new_job
from api.reaper import reap_once
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade
from profiles.models import Job, ModelSpec, Node, ProfileRun, utcnow

POOL = {"kind": "pool", "name": "pool"}


@pytest.fixture
def store(isolated_data_dir):
    upgrade(default_engine())
    with session_scope() as session:
        for node_id in ("w1", "w2"):
            session.add(Node(id=node_id, hardware_class=f"cpu-t{node_id[-1]}", last_heartbeat=utcnow()))
        job = new_job(session, "profiling", [profile_item(POOL), profile_item(POOL)])
        return job.id


def _node(session, node_id: str) -> Node:
    return session.get(Node, node_id)


def _node_row(node_id: str) -> dict:
    with session_scope() as session:
        return _node(session, node_id).model_dump(mode="json")


def _records(job_id: str, index: int, node_id: str, **overrides) -> list[dict]:
    with session_scope() as session:
        item = session.get(Job, job_id).spec["items"][index]
    node = _node_row(node_id)
    return [item_record(item, node, config, **overrides) for config in item["methods"]]


def _claim(job_id: str, index: int, node_id: str) -> dict:
    with session_scope() as session:
        return claim_item(session, job_id, index, _node(session, node_id))


def _report(job_id, index, node_id, claim, records, error=None, max_attempts=3):
    with session_scope() as session:
        return complete_item(session, job_id, index, _node(session, node_id), claim, records, None, error, max_attempts)


def _stored() -> int:
    with session_scope() as session:
        return session.exec(select(func.count()).select_from(ProfileRun)).one()


def test_claim_then_report_finishes_the_item_once(store):
    first = _claim(store, 0, "w1")
    assert first["action"] == "run" and first["claim"]
    assert _claim(store, 0, "w2") == {"action": "skip", "reason": "item is running on w1"}
    answer, requeue = _report(store, 0, "w1", first["claim"], _records(store, 0, "w1"))
    assert answer["accepted"] and answer["added"] == 2 and not requeue
    # a late duplicate (redelivery, revived node) is refused and stores nothing
    answer, _ = _report(store, 0, "w2", "whatever", _records(store, 0, "w2"))
    assert answer == {"accepted": False, "reason": "item already done"}
    assert _claim(store, 0, "w2")["action"] == "skip"
    with session_scope() as session:
        job = session.get(Job, store)
        assert (job.state, job.done, job.total) == ("running", 1, 2)
    assert _stored() == 2


def test_only_the_claim_holder_may_report(store):
    """Defect 1: a worker reported an item it never claimed, with `records: []`, and it counted as done."""
    with pytest.raises(Conflict, match="does not hold the claim"):
        _report(store, 0, "w2", "made-up", [])  # never claimed
    held = _claim(store, 0, "w1")
    with pytest.raises(Conflict):
        _report(store, 0, "w2", held["claim"], _records(store, 0, "w2"))  # another node, the right claim id
    with pytest.raises(Conflict):
        _report(store, 0, "w1", "stale-claim", _records(store, 0, "w1"))  # the node, a wrong claim id
    with session_scope() as session:
        job = session.get(Job, store)
        assert job.done == 0 and job.result["items"]["0"]["state"] == "running"


def test_a_successful_report_must_record_every_planned_method(store):
    held = _claim(store, 0, "w1")
    with pytest.raises(Unprocessable, match="no record for"):
        _report(store, 0, "w1", held["claim"], [])
    with pytest.raises(Unprocessable, match="no record for quant.int8_dynamic"):
        _report(store, 0, "w1", held["claim"], _records(store, 0, "w1")[:1])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_id": "local:/some/path"}, "another model"),
        ({"workload_id": "wl-0000000000000000"}, "another workload"),
        ({"node_id": "w2"}, "another node"),
        ({"hardware_class": "cuda-h100-x8"}, "another hardware class"),
        ({"run_id": "0" * 32}, "run id"),
        ({"method_id": "spec.medusa"}, "not one of this item's"),
        ({"config": {"method": "quant.int8_dynamic", "version": 1, "params": {"evil": 1}}}, "config"),
    ],
)
def test_records_are_bound_to_the_claimed_item(store, change, message):
    """Defect 1: a joined worker's made-up record registered `local:/some/path` as a model."""
    held = _claim(store, 0, "w1")
    records = _records(store, 0, "w1")
    records[1] = {**records[1], **change}
    with pytest.raises(Forbidden, match=message):
        _report(store, 0, "w1", held["claim"], records)
    with session_scope() as session:
        assert session.exec(select(ModelSpec)).all() == []
    assert _stored() == 0


def test_reported_nested_rows_never_overwrite_the_store(store):
    """The model, workload and node rows of a stored record are the server's, not the report's."""
    held = _claim(store, 0, "w1")
    records = _records(store, 0, "w1")
    for record in records:
        record["model"] = {**record["model"], "source": "local:/etc", "id": "zoo:lm-tiny"}
        record["node"] = {**record["node"], "hardware_class": "cuda-fake", "price_per_hour": 99.0}
        record["workload"] = {**record["workload"], "batch_size": 999}
    _report(store, 0, "w1", held["claim"], records)
    with session_scope() as session:
        model = session.get(ModelSpec, "zoo:lm-tiny")
        assert model.source == "zoo:lm-tiny" and model.params == 1234  # the zoo's id, the worker's numbers
        node = session.get(Node, "w1")
        assert node.hardware_class == "cpu-t1" and node.price_per_hour == 0.0
        run = session.exec(select(ProfileRun)).first()
        assert run.workload_id == records[0]["workload_id"]
        from profiles.models import Workload

        assert session.get(Workload, run.workload_id).batch_size == 1


def test_a_node_claims_only_what_its_queues_carry(isolated_data_dir):
    upgrade(default_engine())
    with session_scope() as session:
        session.add(Node(id="w1", hardware_class="cpu-t1", last_heartbeat=utcnow()))
        job_id = new_job(session, "profiling", [profile_item({"kind": "class", "name": "cpu-t2"})]).id
    with pytest.raises(Forbidden, match="does not serve class cpu-t2"):
        _claim(job_id, 0, "w1")


def test_errors_are_retried_then_fail_the_item(store):
    for attempt in (1, 2, 3):
        held = _claim(store, 1, "w1")
        assert held["attempt"] == attempt
        answer, requeue = _report(store, 1, "w1", held["claim"], [], error="boom")
        assert requeue == (attempt < 3)
    with session_scope() as session:
        job = session.get(Job, store)
        assert job.result["items"]["1"]["state"] == "failed" and job.failures == 1


def test_cancelled_jobs_hand_out_no_more_work(store):
    with session_scope() as session:
        cancel_job(session, store)
    assert _claim(store, 0, "w1") == {"action": "skip", "reason": "job cancelled"}


def test_items_of_a_lost_node_wait_for_their_own_class(isolated_data_dir):
    """The running item of a lost node goes back to its class queue, and the job says what it waits for."""
    upgrade(default_engine())
    with session_scope() as session:
        session.add(Node(id="w1", hardware_class="cpu-t1", last_heartbeat=utcnow() - timedelta(seconds=30)))
        session.add(Node(id="w2", hardware_class="cpu-t2", last_heartbeat=utcnow()))
        job = new_job(session, "profiling", [profile_item({"kind": "class", "name": "cpu-t1"})])
        job_id = job.id
    with session_scope() as session:  # claimed before it went silent
        item_claim = claim_item(session, job_id, 0, _node(session, "w1"))
    assert item_claim["action"] == "run"
    sent = reap_once(lost_after_s=10)
    assert sent == [(job_id, 0, "class.cpu-t1")]  # not the pool: w2 is another class
    with session_scope() as session:
        assert _node(session, "w1").status == "lost"
        public = job_public(session.get_one(Job, job_id), session)
        assert public["waiting_for"] == ["class cpu-t1"] and public["running_on"] == []
        with pytest.raises(Forbidden):
            claim_item(session, job_id, 0, _node(session, "w2"))
    assert reap_once(lost_after_s=10) == []  # already re-queued: nothing sent twice
