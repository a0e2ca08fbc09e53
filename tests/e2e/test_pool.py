"""The worker pool end to end with real processes, over Redis and over the embedded SQLite broker:
join with a token, a profiling job across two hardware classes, `method: "auto"` with outputs,
and a worker killed with SIGKILL mid-job while the other finishes it — nothing lost, nothing
duplicated; and a user's own model, registered, advised zero-shot and profiled in one call, whose
answer after the retrain that follows is what the worker measured."""

from __future__ import annotations

import httpx
import pytest
from e2e_stack import credentials, make_stack, wait_for
from hf_fixtures import save_decoder
from sqlmodel import func, select

from profiles.db import session_scope
from profiles.models import Node, ProfileRun
from profiles.settings import get_settings

MODEL = "zoo:lm-tiny"
INT8 = "quant.int8_dynamic"


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


def _store_with_an_advisor_to_train() -> None:
    """A generated int8 grid (4 models, 2 workloads, 2 hardware classes), its configs as a worker
    writes them, in the store before the API starts: so `serve` imports no shipped grid and trains
    its first advisor in seconds, and the only candidate is a method a 2-core worker measures fast."""
    from advisor.synthetic import synthetic_records
    from api.catalog import resolve_methods
    from profiles.transfer import add_records

    int8 = resolve_methods([INT8])[0]["config"]
    records = [{**r, "config": int8} for r in synthetic_records(n_models=4, n_workloads=2, n_hardware=2)]
    with session_scope() as session:
        add_records(session, enumerate((r for r in records if r["method_id"] == INT8), start=1))


def _your_model_scenario(stack) -> None:
    headers, token = credentials()
    admin, client = headers["admin"], headers["client"]
    stack.start_api()
    first = wait_for(
        lambda: [v for v in _get(stack, "/v1/advisor/versions", admin) if v["active"]], 300, "the first advisor"
    )[0]
    stack.start_worker("w1", 1, token)
    (worker,) = wait_for(
        lambda: [n for n in _get(stack, "/v1/workers", admin) if n["status"] == "online"], 120, "w1 to join"
    )

    folder = get_settings().model_root / "my-llama"
    save_decoder("llama", folder)
    model_id = _post(stack, "/v1/models", client, {"path": "my-llama"})["id"]
    assert model_id == f"local:{folder.resolve()}"
    question = {"model": model_id, "workload": {"batch_size": 1, "prompt_len": 16, "gen_len": 8}}
    before = _post(stack, "/v1/recommendations", client, question)
    assert before["advisor_version"] == first["id"] and before["zero_shot"] is True
    offer = before["make_sure"]
    assert offer is not None and offer["path"] == f"/v1/models/{model_id}/profile"
    assert offer["measures"] == ["baseline", INT8] and offer["hardware_classes"] == [worker["hardware_class"]]
    predicted = {c["method_id"]: c for c in before["candidates"] if c["node_id"] == "w1"}
    assert INT8 in predicted and predicted[INT8]["basis"] in ("guarded", "interpolated"), before

    job = _post(stack, offer["path"], client, {**offer["body"], "top_k": 1})
    assert job["total"] == 1  # one workload on the one class a run could go to
    done = wait_for(lambda: _finished(stack, f"/v1/profiling-jobs/{job['id']}", client), 480, "the job", every=1)
    assert (done["state"], done["done"], done["failures"]) == ("succeeded", 1, 0), done
    stored = _get(stack, f"/v1/profiles?limit=100&job_id={job['id']}", client)["items"]
    assert sorted(r["method_id"] for r in stored) == ["baseline", INT8]
    by_the_worker = (model_id, "w1", worker["hardware_class"], "ok")
    assert all((r["model_id"], r["node_id"], r["hardware_class"], r["status"]) == by_the_worker for r in stored), stored
    (measured,) = [r for r in stored if r["method_id"] == INT8]
    assert measured["speedup"] > 0 and measured["latency_p50_s"] > 0

    # ACCEL_RETRAIN_EVERY_N is 100000: only the job's own purpose retrains the advisor now.
    def retrained():
        versions = _get(stack, "/v1/advisor/versions", admin)
        return versions[0] if versions[0]["id"] != first["id"] else None

    version = wait_for(retrained, 300, "the retrain after the job", every=1)
    assert version["n_profiles"] == first["n_profiles"] + len(stored)
    gate = version["scores"]["gate"]
    assert gate["against"] == first["id"]  # judged against the version that answered before the job
    if version["active"]:
        assert gate["not_worse"] is True and gate["reason"].startswith("not worse"), gate
    else:  # the gate refused it and says why; an admin may still activate it
        assert gate["not_worse"] is False and gate["reason"].startswith(f"worse than {first['id']}"), gate
        assert _post(stack, f"/v1/advisor/versions/{version['id']}/activate", admin, {}) == {
            "id": version["id"],
            "active": True,
        }
    assert [v["id"] for v in _get(stack, "/v1/advisor/versions", admin) if v["active"]] == [version["id"]]

    # Any quality floor: the answer is asked about int8's cell whatever quality loss was measured.
    after = _post(stack, "/v1/recommendations", client, {**question, "quality_floor": -1})
    assert after["advisor_version"] == version["id"] and after["zero_shot"] is False
    answered = {c["method_id"]: c for c in after["candidates"] if c["node_id"] == "w1"}
    assert INT8 in answered and answered[INT8]["basis"] == "measured", after
    assert answered[INT8]["speedup"] == pytest.approx(measured["speedup"], rel=1e-9)
    assert after["make_sure"] is None  # every top candidate is measured now

    # Running it: the advisor's pick applied to the user's folder by the worker, outputs and figures back.
    body = {"model": model_id, "prompts": ["def main():"], "method": "auto", "max_new_tokens": 4, "measure": True}
    run = _post(stack, "/v1/runs", client, {**body, "quality_floor": -1})
    finished = wait_for(lambda: _finished(stack, f"/v1/runs/{run['id']}", client), 300, "the auto run of the model")
    result = _get(stack, f"/v1/runs/{run['id']}", client)
    assert finished["state"] == "succeeded", result
    assert result["node"] == "w1" and result["method"] == result["recommendation"]["method_id"]
    assert len(result["outputs"]["texts"]) == 1 and isinstance(result["outputs"]["texts"][0], str)
    assert result["figures"] and all(f["node_id"] == "w1" for f in result["figures"])


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a real worker measures, then the advisor retrains, on a busy 2-core machine
def test_the_real_pool_measures_a_registered_model_and_the_answer_becomes_the_measurement(
    tmp_path, monkeypatch, redis_url
):
    """A user's own random Llama, registered, advised zero-shot, profiled in one call by a real
    worker over Redis; the retrain that follows makes the answer the worker's measurement."""
    stack = make_stack(tmp_path, tmp_path / "cache", redis_url, monkeypatch)
    _store_with_an_advisor_to_train()
    try:
        _your_model_scenario(stack)
    except AssertionError:
        print({name: stack.log(name) for name in stack.procs})
        raise
    finally:
        stack.stop()
