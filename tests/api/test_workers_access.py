"""Join tokens → worker credentials, heartbeats, leaving, lost nodes; key and token management."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from api.auth import create_join_token
from api.routes.workers import mark_lost_nodes
from profiles.db import session_scope
from profiles.models import ApiKey, Node, utcnow


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


FINGERPRINT = {"cpu_model": "Test CPU", "threads": 1, "cores": 2, "mem_bw_gbs": 11.5}


def _join(client, token, **extra):
    body = {"join_token": token, "name": "w1", "hardware_class": "cpu-test-t1", "fingerprint": FINGERPRINT, **extra}
    return client.post("/v1/workers/join", json=body)


def test_join_heartbeat_leave(client, keys, join_token):
    joined = _join(client, join_token, node_id="w1")
    assert joined.status_code == 201, joined.text
    body = joined.json()
    assert body["node_id"] == "w1" and body["queues"] == ["class.cpu-test-t1", "node.w1"]
    worker = auth(body["worker_key"])

    beat = client.post("/v1/workers/heartbeat", json={"current_job": "job-9"}, headers=worker)
    assert beat.status_code == 200 and beat.json()["status"] == "online"
    nodes = client.get("/v1/workers", headers=auth(keys["admin"])).json()
    mine = next(n for n in nodes if n["id"] == "w1")
    assert mine["threads"] == 1 and mine["labels"] == {"site": "lab", "current_job": "job-9"}
    # workers cannot administer
    assert client.get("/v1/workers", headers=worker).status_code == 403

    assert client.post("/v1/workers/leave", headers=worker).json()["status"] == "left"
    assert client.post("/v1/workers/heartbeat", json={}, headers=worker).status_code == 401


def test_join_refuses_bad_expired_and_used_up_tokens(client, join_token):
    assert _join(client, "jt_nope_nope").status_code == 401
    with session_scope() as session:
        _row, expired = create_join_token(session, timedelta(hours=1))
        _row.expires_at = utcnow() - timedelta(seconds=1)
        _row2, once = create_join_token(session, timedelta(hours=1), max_uses=1)
    response = _join(client, expired)
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    assert _join(client, once).status_code == 201
    assert "used up" in _join(client, once).json()["detail"]


def test_bad_join_bodies_are_4xx_and_create_nothing(client, join_token):
    cases = [
        {"join_token": join_token},
        {"join_token": join_token, "hardware_class": "c", "price_per_hour": -1},
        {"join_token": join_token, "hardware_class": "c", "node_id": "bad id!"},
        {"join_token": join_token, "hardware_class": "c", "surprise": 1},
    ]
    for body in cases:
        response = client.post("/v1/workers/join", json=body)
        assert response.status_code == 422 and response.json()["code"] == "invalid_request", body
    with session_scope() as session:
        assert session.exec(select(Node)).all() == []
        assert session.exec(select(ApiKey).where(ApiKey.scope == "worker")).all() == []


def test_a_second_online_node_with_the_same_id_conflicts_and_rejoin_rotates_the_key(client, join_token):
    first = _join(client, join_token, node_id="w1").json()
    assert _join(client, join_token, node_id="w1").status_code == 409
    client.post("/v1/workers/leave", headers=auth(first["worker_key"]))
    second = _join(client, join_token, node_id="w1").json()
    assert second["worker_key"] != first["worker_key"]
    assert client.post("/v1/workers/heartbeat", json={}, headers=auth(second["worker_key"])).status_code == 200


def test_silent_nodes_are_marked_lost(client, join_token):
    _join(client, join_token, node_id="w1")
    with session_scope() as session:
        assert mark_lost_nodes(session, 45) == []
        node = session.get(Node, "w1")
        node.last_heartbeat = utcnow() - timedelta(minutes=5)
        session.add(node)
    with session_scope() as session:
        assert mark_lost_nodes(session, 45) == ["w1"]
        assert session.get(Node, "w1").status == "lost"


def test_admin_manages_keys_and_tokens(client, keys):
    admin = auth(keys["admin"])
    created = client.post("/v1/keys", json={"scope": "client", "name": "ci"}, headers=admin)
    assert created.status_code == 201 and created.json()["key"].startswith("ak_")
    listed = client.get("/v1/keys", headers=admin).json()
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert client.post("/v1/keys", json={"scope": "root"}, headers=admin).status_code == 422
    assert client.delete("/v1/keys/does-not-exist", headers=admin).json()["code"] == "not_found"

    token = client.post("/v1/join-tokens", json={"ttl_hours": 2, "max_uses": 3}, headers=admin).json()
    assert token["token"].startswith("jt_") and token["uses"] == 0
    assert client.post("/v1/join-tokens", json={"ttl_hours": 0}, headers=admin).status_code == 422
    revoked = client.delete(f"/v1/join-tokens/{token['id']}", headers=admin).json()
    assert revoked["revoked_at"] is not None
    assert "revoked" in _join(client, token["token"]).json()["detail"]


def test_profiles_page_filter_and_export(client, keys, record_factory):
    from profiles.transfer import add_records

    with session_scope() as session:
        records = [record_factory(i) for i in range(5)]
        records[3]["job_id"] = "job-a"
        add_records(session, enumerate(records, start=1))
    headers = auth(keys["client"])
    page = client.get("/v1/profiles", params={"limit": 2, "offset": 1}, headers=headers).json()
    assert page["total"] == 5 and len(page["items"]) == 2 and page["items"][0]["model"]["family"] == "decoder-lm"
    only = client.get("/v1/profiles", params={"model_id": "zoo:lm-1"}, headers=headers).json()
    assert only["total"] == 2 and {r["model_id"] for r in only["items"]} == {"zoo:lm-1"}
    one_job = client.get("/v1/profiles", params={"job_id": "job-a"}, headers=headers).json()
    assert one_job["total"] == 1 and one_job["items"][0]["run_id"] == records[3]["run_id"]
    assert client.get("/v1/profiles", params={"limit": 0}, headers=headers).status_code == 422
    exported = client.get("/v1/profiles/export", params={"format": "csv"}, headers=headers)
    assert exported.status_code == 200 and len(exported.text.strip().splitlines()) == 6


def test_metrics_and_unknown_routes(client):
    client.get("/healthz")
    text = client.get("/metrics").text
    assert 'route="/healthz"' in text
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
