"""The job/item state machine: claims, first-report-wins, retries, cancellation, lost nodes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from api.errors import Forbidden
from api.jobs import cancel_job, claim_item, complete_item, new_job, requeue_lost
from api.reaper import reap_once
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade
from profiles.models import Job, Node, ProfileRun, utcnow

ITEM = {
    "kind": "profile",
    "model": "zoo:lm-tiny",
    "workload": {},
    "methods": [],
    "target": {"kind": "pool", "name": "pool"},
}


@pytest.fixture
def store(isolated_data_dir):
    upgrade(default_engine())
    with session_scope() as session:
        for node_id in ("w1", "w2"):
            session.add(Node(id=node_id, hardware_class=f"cpu-t{node_id[-1]}", last_heartbeat=utcnow()))
        job = new_job(session, "profiling", [dict(ITEM), dict(ITEM)])
        return job.id


def _records(factory, node_id: str) -> list[dict]:
    record = factory(0, threads=int(node_id[-1]))
    record["node_id"] = record["node"]["id"] = node_id
    return [record]


def test_claim_then_report_finishes_the_item_once(store, record_factory):
    with session_scope() as session:
        assert claim_item(session, store, 0, "w1")["action"] == "run"
        assert claim_item(session, store, 0, "w2") == {"action": "skip", "reason": "item is running on w1"}
    with session_scope() as session:
        answer, requeue = complete_item(session, store, 0, "w1", _records(record_factory, "w1"), None, None, 3)
        assert answer["accepted"] and answer["added"] == 1 and not requeue
    with session_scope() as session:  # a late duplicate (redelivery, revived node) is refused
        answer, _ = complete_item(session, store, 0, "w2", _records(record_factory, "w2"), None, None, 3)
        assert answer == {"accepted": False, "reason": "item already done"}
        assert claim_item(session, store, 0, "w2")["action"] == "skip"
        job = session.get(Job, store)
        assert (job.state, job.done, job.total) == ("running", 1, 2)
        assert len(session.exec(__import__("sqlmodel").select(ProfileRun)).all()) == 1


def test_a_worker_cannot_report_records_of_another_node(store, record_factory):
    with session_scope() as session:
        claim_item(session, store, 0, "w1")
    with pytest.raises(Forbidden), session_scope() as session:
        complete_item(session, store, 0, "w1", _records(record_factory, "w2"), None, None, 3)


def test_errors_are_retried_then_fail_the_item(store):
    for attempt in (1, 2, 3):
        with session_scope() as session:
            assert claim_item(session, store, 1, "w1")["attempt"] == attempt
            answer, requeue = complete_item(session, store, 1, "w1", [], None, "boom", 3)
            assert requeue == (attempt < 3)
    with session_scope() as session:
        job = session.get(Job, store)
        assert job.result["items"]["1"]["state"] == "failed" and job.failures == 1


def test_cancelled_jobs_hand_out_no_more_work(store):
    with session_scope() as session:
        cancel_job(session, store)
    with session_scope() as session:
        assert claim_item(session, store, 0, "w1") == {"action": "skip", "reason": "job cancelled"}


def test_items_of_a_lost_node_are_requeued_and_claimable_by_another(store):
    with session_scope() as session:
        claim_item(session, store, 0, "w1")
        node = session.get(Node, "w1")
        node.last_heartbeat = utcnow() - timedelta(seconds=30)
        session.add(node)
    with session_scope() as session:
        assert requeue_lost(session, []) == []
    sent = reap_once(lost_after_s=10)
    assert sent == [(store, 0, "pool")]
    with session_scope() as session:
        assert session.get(Node, "w1").status == "lost"
        assert claim_item(session, store, 0, "w2")["action"] == "run"
    assert reap_once(lost_after_s=10) == []  # already lost: nothing re-sent twice
