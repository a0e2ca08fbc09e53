"""Bad input from outside: every case is a clear 4xx in the one error shape, nothing is written,
and what was refused before breaks nothing after (the defects of issue 20, items 5–7)."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlmodel import func, select

from profiles.db import session_scope
from profiles.models import ApiKey, Job, JoinToken, Node, utcnow

FINGERPRINT = {"cpu_model": "Test CPU", "threads": 1, "cores": 2}
GOOD_WORKLOAD = '{"batch_size": 1, "prompt_len": 8, "gen_len": 4}'


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _count(table) -> int:
    with session_scope() as session:
        return session.exec(select(func.count()).select_from(table)).one()


def _raw(client, method: str, path: str, body: str, headers: dict) -> httpx.Response:
    return client.request(method, path, content=body, headers={**headers, "Content-Type": "application/json"})


def _online_node(node_id: str = "w1", hardware_class: str = "cpu-x-t1") -> None:
    with session_scope() as session:
        session.add(Node(id=node_id, hardware_class=hardware_class, last_heartbeat=utcnow()))


@pytest.mark.parametrize(
    "fingerprint",
    [
        '{"threads": "abc"}',
        '{"threads": 1.5}',
        '{"threads": true}',
        '{"cpu_model": 123}',
        '{"ram_gb": "lots"}',
        '{"gpu_count": [1]}',
        '{"cores": 100000000000000000000000}',
        '{"ram_gb": NaN}',
        '{"mem_bw_gbs": Infinity}',
        '{"probe": {"mem_bw_gbs": "fast"}}',
        '{"anything": {"nested": 1}}',
        '{"anything": "' + "x" * 300 + '"}',
    ],
)
def test_a_bad_fingerprint_is_refused_and_the_pool_stays_readable(client, keys, join_token, fingerprint):
    """Defect 5: `threads: "abc"` was stored; GET /v1/workers and the node's leave were 500 for good."""
    start = f'{{"join_token": "{join_token}", "hardware_class": "cpu-x-t1", "node_id": "bad"'
    body = f'{start}, "fingerprint": {fingerprint}}}'
    response = _raw(client, "POST", "/v1/workers/join", body, {})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request" and "fingerprint" in response.json()["detail"]
    assert _count(Node) == 1  # only the keys fixture's node
    assert client.get("/v1/workers", headers=auth(keys["admin"])).status_code == 200


def test_a_good_fingerprint_joins_with_its_facts(client, keys, join_token):
    body = {
        "join_token": join_token,
        "hardware_class": "cpu-x-t1",
        "node_id": "w9",
        "fingerprint": {**FINGERPRINT, "torch": "2.13.0", "probe": {"mem_bw_gbs": 11.5}, "ram_gb": 8},
    }
    assert client.post("/v1/workers/join", json=body).status_code == 201
    with session_scope() as session:
        node = session.get(Node, "w9")
        assert (node.threads, node.cores, node.ram_gb, node.fingerprint["torch"]) == (1, 2, 8.0, "2.13.0")


def test_nodes_stored_before_validation_no_longer_break_the_pool(client, keys):
    """A row written by an older version with `threads = 'abc'` is cleaned by migration 0003."""
    from sqlalchemy import text

    from profiles.db import default_engine
    from profiles.migrate import upgrade

    engine = default_engine()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('0002')"))
        conn.execute(text("ALTER TABLE node DROP COLUMN current_item"))
        conn.execute(text("ALTER TABLE node DROP COLUMN last_work_at"))
        conn.execute(
            text(
                "INSERT INTO node (id, name, hardware_class, device_kind, cpu_model, threads, cores, ram_gb, gpu_count,"
                " fingerprint, labels, price_per_hour, status, created_at) VALUES ('old', '', 'c', 'cpu', 123, 'abc',"
                " 1.5, 'lots', '[1]', '{}', '{}', 0, 'online', '2026-01-01 00:00:00.000000')"
            )
        )
    upgrade(engine)
    nodes = client.get("/v1/workers", headers=auth(keys["admin"]))
    assert nodes.status_code == 200, nodes.text
    old = next(n for n in nodes.json() if n["id"] == "old")
    assert old["threads"] is None
    with session_scope() as session:
        row = session.get(Node, "old")
        assert (row.cores, row.ram_gb, row.gpu_count) == (None, None, 0)


@pytest.mark.parametrize(
    "path, body, scope",
    [
        ("/v1/recommendations", '{"model": "zoo:lm-tiny", "workload": {"batch_size": 1' + "0" * 400 + "}}", "client"),
        ("/v1/recommendations", '{"model": "zoo:lm-tiny", "workload": {"batch_size": NaN}}', "client"),
        ("/v1/recommendations", '{"model": "zoo:lm-tiny", "workload": {"batch_size": Infinity}}', "client"),
        ("/v1/recommendations", '{"model": "zoo:lm-tiny", "workload": {"batch_size": 1.5}}', "client"),
        ("/v1/recommendations", '{"model": "zoo:lm-tiny", "workload": {"batch_size": true}}', "client"),
        ("/v1/recommendations", '{"model": "zoo:lm-tiny", "workload": {"batch_size": 1000000000}}', "client"),
        ("/v1/recommendations", '{"model": "zoo:lm-tiny", "workload": {}, "budget": NaN}', "client"),
        ("/v1/recommendations", '{"model": "zoo:lm-tiny", "workload": {}, "top_k": 5.0}', "client"),
        # Found by the fuzz: an empty list of lengths to draw from was a 500 (mean of no data).
        (
            "/v1/recommendations",
            '{"model": "zoo:lm-tiny", "workload": {"kind": "lm-stream", "gen_lens": []}}',
            "client",
        ),
        (
            "/v1/recommendations",
            '{"model": "zoo:lm-tiny", "workload": {"kind": "lm-stream", "prompt_lens": []}}',
            "client",
        ),
        ("/v1/join-tokens", '{"max_uses": 1' + "0" * 400 + "}", "admin"),
        ("/v1/join-tokens", '{"ttl_hours": NaN}', "admin"),
        ("/v1/join-tokens", '{"labels": {"k": 5}}', "admin"),
        ("/v1/runs", '{"model": "zoo:lm-tiny", "prompts": ["x"], "seed": ' + str(2**70) + "}", "client"),
        ("/v1/runs", '{"model": "zoo:lm-tiny", "prompts": ["x"], "max_new_tokens": "8"}', "client"),
        (
            "/v1/runs",
            '{"model": "zoo:lm-tiny", "prompts": ["x"], '
            '"method": {"method": "lm.spec.medusa", "params": {"heads": 1000000}}}',
            "client",
        ),
        (
            "/v1/runs",
            '{"model": "zoo:lm-tiny", "prompts": ["x"], "method": {"method": "serve.prefix_caching", '
            '"params": {"cache_blocks": 1000000000000}}}',
            "client",
        ),
        (
            "/v1/profiling-jobs",
            '{"models": ["zoo:lm-tiny"], "methods": ["baseline"], '
            '"workloads": [{"kind": "lm-stream", "requests": 1000000000}]}',
            "client",
        ),
        (
            "/v1/profiling-jobs",
            '{"models": ["zoo:lm-tiny"], "methods": ["baseline"], "workloads": [{"batch_size": 100000}]}',
            "client",
        ),
        (
            "/v1/profiling-jobs",
            '{"models": ["zoo:lm-tiny"], "methods": ["baseline"], "workloads": [' + GOOD_WORKLOAD + '], "pool": 1}',
            "client",
        ),
    ],
)
def test_overflow_non_finite_coerced_and_unbounded_numbers_are_422(client, keys, path, body, scope):
    """Defects 6 and 7: 10**400 was a 500, NaN/Infinity/1.5/true were accepted, 1e9 batches were queued."""
    _online_node()
    response = _raw(client, "POST", path, body, auth(keys[scope]))
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"detail", "code"} and len(response.json()["detail"]) <= 1000
    assert _count(Job) == 0 and _count(JoinToken) == 0


@pytest.mark.parametrize(
    "path",
    [
        "/v1/profiles?offset=1" + "0" * 30,
        "/v1/profiles?limit=-5",
        "/v1/profiles?limit=100000",
        "/v1/profiling-jobs?limit=-5",
        "/v1/profiling-jobs?limit=100000",
    ],
)
def test_paging_is_bounded(client, keys, path):
    response = client.get(path, headers=auth(keys["client"]))
    assert response.status_code == 422, response.text


def test_a_job_for_a_class_no_worker_ever_served_is_refused_and_an_offline_one_is_flagged(client, keys):
    headers = auth(keys["client"])
    body = {"models": ["zoo:lm-tiny"], "methods": ["baseline"], "workloads": [json.loads(GOOD_WORKLOAD)]}
    refused = client.post("/v1/profiling-jobs", json={**body, "hardware_classes": ["cuda-h100-x8"]}, headers=headers)
    assert refused.status_code == 422 and "no worker of hardware class cuda-h100-x8" in refused.json()["detail"]
    with session_scope() as session:  # a class whose only node is offline now
        session.add(Node(id="gone", hardware_class="cpu-y-t2", status="lost", last_heartbeat=utcnow()))
    flagged = client.post("/v1/profiling-jobs", json={**body, "hardware_classes": ["cpu-y-t2"]}, headers=headers)
    assert flagged.status_code == 201 and flagged.json()["waiting_for"] == ["class cpu-y-t2"]
    job = client.get(f"/v1/jobs/{flagged.json()['id']}", headers=headers).json()
    assert job["waiting_for"] == ["class cpu-y-t2"] and job["state"] == "queued"
    health = client.get("/healthz").json()
    assert health["status"] == "degraded" and health["unserved"] == [{"target": "class cpu-y-t2", "queued_items": 1}]
    run = client.post(
        "/v1/runs",
        json={"model": "zoo:lm-tiny", "prompts": ["x"], "method": "baseline", "hardware_class": "nope"},
        headers=headers,
    )
    assert run.status_code == 422 and "no worker of hardware class 'nope'" in run.json()["detail"]


def test_a_grid_too_large_for_one_job_is_refused_at_once(client, keys):
    """Defect 7: a 10 000-item job took 137 s to accept."""
    _online_node()
    workloads = [{"batch_size": 1, "prompt_len": 8, "gen_len": g} for g in range(1, 201)]
    body = {
        "models": ["zoo:lm-tiny"] + [f"zoo:lm-{n}" for n in ("1m", "2m")],
        "methods": ["baseline"],
        "workloads": workloads,
    }
    with session_scope() as session:
        for n in range(2, 40):
            session.add(Node(id=f"w{n}", hardware_class=f"cpu-x-t{n}", last_heartbeat=utcnow()))
    response = client.post("/v1/profiling-jobs", json=body, headers=auth(keys["client"]))
    assert response.status_code == 422 and "at most 2000" in response.json()["detail"]
    assert _count(Job) == 0


def test_bodies_are_capped_and_errors_never_echo_large_input(client, keys):
    """Defect 7: 5 MB labels, class names and heartbeats were stored; a 5 MB unknown key was echoed back."""
    headers = auth(keys["admin"])
    big = "x" * (5 * 2**20)
    response = client.post("/v1/join-tokens", content=json.dumps({"labels": {"a": big}}), headers=headers)
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    response = client.post("/v1/join-tokens", content=json.dumps({"x" * 500_000: 1}), headers=headers)
    assert response.status_code == 422 and len(response.text) < 2000
    chunked = client.post("/v1/join-tokens", content=iter([b'{"note": "', big.encode(), b'"}']), headers=headers)
    assert chunked.status_code == 413
    long_class = {"join_token": "jt_a_b", "hardware_class": "c" * 1000}
    assert client.post("/v1/workers/join", json=long_class).status_code == 422
    assert (
        client.post("/v1/workers/heartbeat", json={"current_job": "j" * 1000}, headers=auth(keys["worker"])).status_code
        == 422
    )
    assert _count(JoinToken) == 0


def test_405_names_the_allowed_methods(client):
    response = client.put("/healthz")
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert response.json()["code"] == "method_not_allowed"


def test_a_worker_key_bound_to_no_node_may_not_claim(client, keys):
    """Defect 1: a worker key tied to no node claimed an item of another job."""
    from api.auth import create_api_key
    from api.jobs import new_job

    with session_scope() as session:
        loose = create_api_key(session, "worker", name="by hand")[1]
        job_id = new_job(session, "profiling", [{"kind": "profile", "target": {"kind": "pool", "name": "pool"}}]).id
    response = client.post(f"/v1/jobs/{job_id}/items/0/claim", headers=auth(loose))
    assert response.status_code == 403 and "belongs to no node" in response.json()["detail"]
    report = client.post(f"/v1/jobs/{job_id}/items/0/result", json={"claim": "x", "records": []}, headers=auth(loose))
    assert report.status_code == 403
    with session_scope() as session:
        assert session.get(Job, job_id).result["items"]["0"]["state"] == "queued"
        assert session.exec(select(ApiKey).where(ApiKey.node_id.is_not(None))).first().node_id == "w-keys"
