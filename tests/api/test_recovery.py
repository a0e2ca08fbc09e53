"""Faults the service repairs by itself: messages the broker lost, claims nobody works on, a worker
restarted under its old node id, a node an admin removes; and reads that never queue on a lock.
Messages are read back from the embedded broker's real SQLite file."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from api_helpers import broker_messages, profile_item
from sqlmodel import select

from api.dispatch import reconcile_once
from api.jobs import new_job
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade
from profiles.models import ApiKey, Job, Node, utcnow
from profiles.settings import get_settings

CLASS = {"kind": "class", "name": "cpu-t1"}
AGO = timedelta(seconds=120)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def store(isolated_data_dir):
    upgrade(default_engine())


def _node(node_id="w1", hardware_class="cpu-t1", **fields) -> None:
    with session_scope() as session:
        defaults = {"last_heartbeat": utcnow(), "last_work_at": utcnow() - AGO}
        session.add(Node(id=node_id, hardware_class=hardware_class, **{**defaults, **fields}))


def _job(*items, **state) -> str:
    """A job whose items were created (and, with ``state``, last sent or claimed) two minutes ago."""
    with session_scope() as session:
        job = new_job(session, "profiling", list(items) or [profile_item(CLASS)])
        state = {"queued_at": (utcnow() - AGO).isoformat(), **state}
        job.result = {"items": {k: {**v, **state} for k, v in job.result["items"].items()}}
        session.add(job)
        return job.id


def _item(job_id: str, index: int = 0) -> dict:
    with session_scope() as session:
        return session.get(Job, job_id).result["items"][str(index)]


def test_an_item_never_sent_is_sent_by_the_reconciler(store):
    """The API died between the commit and the send (or the broker refused it)."""
    with session_scope() as session:  # just queued: the sender has it in hand
        new_job(session, "profiling", [profile_item(CLASS)])
    assert reconcile_once(30) == 0
    with session_scope() as session:
        session.delete(session.exec(select(Job)).one())
    job_id = _job()
    assert reconcile_once(30) == 1
    assert broker_messages() == [("class.cpu-t1", job_id, 0)]
    assert _item(job_id)["dispatched_at"] and _item(job_id)["sends"] == 1
    assert reconcile_once(30) == 0  # sent: not again while nobody could have taken it


def test_a_lost_message_is_sent_again_once_a_serving_node_sat_idle(store):
    """Defect 2: a worker took the message and never ran it (the API was down); the job hung at 3 of 4."""
    sent_long_ago = (utcnow() - AGO).isoformat()
    job_id = _job(dispatched_at=sent_long_ago)
    assert reconcile_once(30) == 0  # no node serves class cpu-t1: nothing to send it to
    _node("w2", "cpu-t2")
    assert reconcile_once(30) == 0  # an idle node of another class proves nothing
    _node("w1", "cpu-t1", last_work_at=utcnow())
    assert reconcile_once(30) == 0  # w1 just did something: its message may still be on the way
    with session_scope() as session:
        node = session.get(Node, "w1")
        node.last_work_at = utcnow() - AGO
        session.add(node)
    assert reconcile_once(30) == 1
    assert broker_messages() == [("class.cpu-t1", job_id, 0)]


def test_a_busy_node_is_not_taken_for_an_idle_one(store):
    _node("w1", "cpu-t1", current_item="other-job:0")
    _job(dispatched_at=(utcnow() - AGO).isoformat())
    assert reconcile_once(30) == 0


def test_an_orphaned_claim_is_requeued(store):
    """Claimed, but the node's heartbeats since say it works on nothing (its task died after the claim)."""
    _node("w1", "cpu-t1", current_item=None)
    job_id = _job(state="running", node="w1", claim="c1", attempts=1, claimed_at=(utcnow() - AGO).isoformat())
    assert reconcile_once(30) == 1
    state = _item(job_id)
    assert state["state"] == "queued" and state["requeue_reason"] == "claim orphaned" and state["node"] is None
    assert broker_messages() == [("class.cpu-t1", job_id, 0)]


def test_a_claim_its_node_reports_working_on_is_left_alone(store):
    job_id = _job(state="running", node="w1", claim="c1", attempts=1, claimed_at=(utcnow() - AGO).isoformat())
    _node("w1", "cpu-t1", current_item=f"{job_id}:0")
    assert reconcile_once(30) == 0 and _item(job_id)["state"] == "running"


def test_the_api_start_sends_what_it_had_not_sent(isolated_data_dir):
    """Start-up reconciliation: the previous API process was killed right after committing a job."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    upgrade(default_engine())
    job_id = _job()
    with TestClient(create_app()):
        for _ in range(100):
            if broker_messages():
                break
            import time

            time.sleep(0.05)
    assert broker_messages() == [("class.cpu-t1", job_id, 0)]


def _join(client, token, node_id="w1", **extra):
    body = {"join_token": token, "hardware_class": "cpu-t1", "node_id": node_id, **extra}
    return client.post("/v1/workers/join", json=body)


def test_a_restarted_worker_takes_over_its_node_with_its_last_key(client, keys, join_token):
    """Defect 3: after kill -9 and a quick restart the new worker got 409 and the pool ran without it."""
    first = _join(client, join_token).json()
    job_id = _job(profile_item(CLASS))
    claimed = client.post(f"/v1/jobs/{job_id}/items/0/claim", headers=auth(first["worker_key"])).json()
    assert claimed["action"] == "run"
    assert _join(client, join_token).status_code == 409  # no proof: another process may not steal the id
    assert _join(client, join_token, previous_key=keys["worker"]).status_code == 409  # another node's key
    second = _join(client, join_token, previous_key=first["worker_key"])
    assert second.status_code == 201, second.text
    assert client.post("/v1/workers/heartbeat", json={}, headers=auth(first["worker_key"])).status_code == 401
    state = _item(job_id)
    assert state["state"] == "queued" and state["requeue_reason"] == "node restarted"


def test_an_admin_removes_a_node(client, keys, join_token, record_factory):
    joined = _join(client, join_token).json()
    worker, admin = auth(joined["worker_key"]), auth(keys["admin"])
    running = _job(profile_item(CLASS))
    client.post(f"/v1/jobs/{running}/items/0/claim", headers=worker)
    only_for_it = _job(profile_item({"kind": "node", "name": "w1"}))
    removed = client.delete("/v1/workers/w1", headers=admin)
    assert removed.json() == {"id": "w1", "status": "deleted", "requeued": 1, "failed": 1}
    assert client.post("/v1/workers/heartbeat", json={}, headers=worker).status_code == 401
    assert "w1" not in {n["id"] for n in client.get("/v1/workers", headers=admin).json()}
    assert _item(running)["state"] == "queued" and _item(only_for_it)["state"] == "failed"
    assert client.delete("/v1/workers/w1", headers=admin).status_code == 404
    # a node with stored profiles stays as their history, hidden from the pool, and cannot rejoin
    from profiles.transfer import add_records

    with session_scope() as session:
        add_records(session, [(1, record_factory(0))])
    measured = record_factory(0)["node_id"]
    with session_scope() as session:
        session.get(Node, measured).status = "online"
    assert client.delete(f"/v1/workers/{measured}", headers=admin).json()["status"] == "removed"
    assert _join(client, join_token, node_id=measured).status_code == 409
    with session_scope() as session:
        assert session.get(Node, measured).status == "removed"


def test_authenticated_reads_do_not_wait_for_the_write_lock(client, keys, monkeypatch):
    """Defect 4: every request's auth wrote last_used_at under BEGIN IMMEDIATE, so requests queued on one lock."""
    from profiles.db import make_engine

    # Another writer holds SQLite's write lock; a read must not wait for it (a short busy timeout
    # makes any write attempt fail at once instead of after 30 s).
    monkeypatch.setattr("profiles.db.default_engine", lambda: make_engine(get_settings().database_url, 200))
    holder = sqlite3.connect(get_settings().data_dir / "accel.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for path in ("/v1/methods", "/v1/profiles", "/v1/models", "/v1/profiling-jobs"):
            response = client.get(path, headers=auth(keys["client"]))
            assert response.status_code == 200, (path, response.text)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    from api.auth import flush_key_use

    with session_scope() as session:
        assert flush_key_use(session) >= 1  # the last use is noted, and written off the request path
    with session_scope() as session:
        used = session.exec(select(ApiKey).where(ApiKey.scope == "client")).one()
        assert used.last_used_at is not None


def test_server_errors_are_counted_in_metrics(client, isolated_data_dir):
    """Defect 4: 53 unhandled errors were logged, and /metrics had no status="500" series."""
    from fastapi.testclient import TestClient

    app = client.app

    @app.get("/v1/broken-on-purpose")
    def broken() -> dict:
        raise RuntimeError("a bug")

    quiet = TestClient(app, raise_server_exceptions=False)
    response = quiet.get("/v1/broken-on-purpose")
    assert response.status_code == 500 and response.json() == {
        "detail": "internal error; the server log has the details",
        "code": "internal",
    }
    assert 'route="/v1/broken-on-purpose",status="500"' in client.get("/metrics").text
