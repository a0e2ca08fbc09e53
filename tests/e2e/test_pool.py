"""The worker pool end to end with real processes, over Redis and over the embedded SQLite broker:
join with a token, a profiling job across two hardware classes, `method: "auto"` with outputs,
and a worker killed with SIGKILL mid-job while the other finishes it — nothing lost, nothing
duplicated."""

from __future__ import annotations

import httpx
import pytest
from e2e_stack import credentials, make_stack, wait_for
from sqlmodel import func, select

from profiles.db import session_scope
from profiles.models import Node, ProfileRun

MODEL = "zoo:lm-tiny"


def _get(stack, path, headers):
    response = httpx.get(stack.url + path, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _post(stack, path, headers, body, expect=(200, 201, 202)):
    response = httpx.post(stack.url + path, headers=headers, json=body, timeout=60)
    assert response.status_code in expect, response.text
    return response.json()


def _finished(stack, path, headers):
    job = _get(stack, path, headers)
    return job if job["state"] in ("succeeded", "failed", "cancelled") else None


def _secrets_in_logs(stack, secrets: list[str]) -> list[tuple[str, str]]:
    """(log, what) for every secret, or the secret half of a key, that shows up in any process's log."""
    worker_keys = [f.read_text().strip() for f in stack.logs.glob("data-*/worker/*.key")]
    assert len(worker_keys) == 2, worker_keys  # both workers kept their key (0600), for a restart's takeover
    found = []
    for log in stack.logs.glob("*.log"):
        text = log.read_text()
        for secret in secrets + worker_keys:
            if secret in text or secret.rsplit("_", 1)[-1] in text:
                found.append((log.name, secret[:6] + "…"))
    return found


def _scenario(stack):
    headers, token = credentials()
    admin, client = headers["admin"], headers["client"]
    stack.start_api()
    shipped = _get(stack, "/v1/profiles?limit=1", admin)["total"]  # what serve imported on first start
    stack.start_worker("w1", 1, token)
    stack.start_worker("w2", 2, token)

    def both_online():
        nodes = _get(stack, "/v1/workers", admin)
        return nodes if sum(n["status"] == "online" for n in nodes) == 2 else None

    nodes = wait_for(both_online, 120, "both workers to join")
    classes = {n["id"]: n["hardware_class"] for n in nodes}
    assert classes["w1"] != classes["w2"]  # 1 and 2 torch threads are two hardware classes

    # A profiling job across both hardware classes.
    workloads = [{"batch_size": 1, "prompt_len": 16, "gen_len": g} for g in (4, 8, 12)]
    job = _post(
        stack,
        "/v1/profiling-jobs",
        client,
        {"models": [MODEL], "methods": ["baseline", "quant.int8_dynamic"], "workloads": workloads},
    )
    assert job["total"] == 6
    done = wait_for(lambda: _finished(stack, f"/v1/profiling-jobs/{job['id']}", client), 300, "the grid job", every=0.5)
    assert (done["state"], done["done"], done["failures"]) == ("succeeded", 6, 0), done
    profiles = _get(stack, f"/v1/profiles?limit=100&job_id={job['id']}", client)
    assert profiles["total"] == 12
    assert {r["hardware_class"] for r in profiles["items"]} == set(classes.values())
    assert all(r["speedup"] > 0 for r in profiles["items"] if r["status"] == "ok")

    # Resubmitting the same grid is a no-op: every (task, method, class) is stored already.
    again = _post(
        stack,
        "/v1/profiling-jobs",
        client,
        {"models": [MODEL], "methods": ["baseline", "quant.int8_dynamic"], "workloads": workloads},
    )
    assert again["total"] == 0 and again["state"] == "succeeded"

    # Train the advisor on what the pool measured, then let it choose.
    train = _post(stack, "/v1/advisor/train", admin, {})
    # The store also holds the shipped grid, so training takes minutes on a busy 2-core machine.
    trained = wait_for(lambda: _finished(stack, f"/v1/jobs/{train['id']}", client), 600, "training")
    assert trained["state"] == "succeeded", trained
    advice = _post(
        stack,
        "/v1/recommendations",
        client,
        {"model": MODEL, "workload": {"batch_size": 1, "prompt_len": 16, "gen_len": 8}},
    )
    assert advice["candidates"] and {c["node_id"] for c in advice["candidates"]} == {"w1", "w2"}
    run = _post(
        stack,
        "/v1/runs",
        client,
        {
            "model": MODEL,
            "prompts": ["def main():", "import os\n"],
            "method": "auto",
            "max_new_tokens": 8,
            "measure": True,
        },
    )
    finished = wait_for(lambda: _finished(stack, f"/v1/runs/{run['id']}", client), 180, "the auto run")
    result = _get(stack, f"/v1/runs/{run['id']}", client)
    assert finished["state"] == "succeeded", result
    assert len(result["outputs"]["texts"]) == 2 and all(isinstance(t, str) for t in result["outputs"]["texts"])
    assert result["node"] in ("w1", "w2") and result["method"] == result["recommendation"]["method_id"]
    assert result["figures"] and all(f["node_id"] == result["node"] for f in result["figures"])

    # Kill a worker mid-job: the other one finishes the job; no record lost, none duplicated.
    big = [{"batch_size": 1, "prompt_len": 16, "gen_len": 24 + 2 * i} for i in range(6)]
    pool_job = _post(
        stack,
        "/v1/profiling-jobs",
        client,
        {"models": [MODEL], "methods": ["baseline", "quant.int8_dynamic"], "workloads": big, "pool": True},
    )
    wait_for(
        lambda: "w1" in _get(stack, f"/v1/profiling-jobs/{pool_job['id']}", client)["running_on"],
        120,
        "w1 to be mid-item",
        every=0.05,
    )
    stack.kill("w1")
    done = wait_for(
        lambda: _finished(stack, f"/v1/profiling-jobs/{pool_job['id']}", client),
        600,
        "the job to finish on w2",
        every=0.5,
    )
    assert (done["state"], done["done"], done["failures"]) == ("succeeded", 6, 0), done
    assert done["attempts"] > 6  # w1's item was claimed again after w1 was declared lost
    with session_scope() as session:
        rows = session.exec(select(ProfileRun).where(ProfileRun.job_id == pool_job["id"])).all()
        assert len(rows) == 12  # 6 items × (baseline + int8)
        assert len({(r.workload_id, r.method_id) for r in rows}) == 12  # no item stored twice
        assert session.get(Node, "w1").status == "lost"
        assert (
            session.exec(select(func.count()).select_from(ProfileRun)).one()
            == shipped + 12 + len(result["figures"]) + 12
        )

    # Every process logged at INFO for the whole run: no key or token it handled appears in a log.
    created = [h["Authorization"].split()[1] for h in (admin, client)] + [token]
    assert _secrets_in_logs(stack, created) == []


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["redis", "embedded-sqlite"])
def test_pool_end_to_end(broker, tmp_path, zoo_cache, monkeypatch, request):
    """Over Redis, and on the embedded default's SQLite broker with no Redis at all."""
    broker_url = request.getfixturevalue("redis_url") if broker == "redis" else None
    stack = make_stack(tmp_path, zoo_cache, broker_url, monkeypatch)
    try:
        _scenario(stack)
    except AssertionError:
        print({name: stack.log(name) for name in stack.procs})
        raise
    finally:
        stack.stop()
