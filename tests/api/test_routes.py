"""Client routes with bad input: a clear 4xx and nothing written; retraining on new records."""

from __future__ import annotations

import time

from sqlmodel import func, select

from profiles.db import session_scope
from profiles.models import Job, Node, utcnow

GOOD_WORKLOAD = {"batch_size": 1, "prompt_len": 8, "gen_len": 4}


def _jobs() -> int:
    with session_scope() as session:
        return session.exec(select(func.count()).select_from(Job)).one()


def _online_node():
    with session_scope() as session:
        session.add(Node(id="w1", hardware_class="cpu-x-t1", last_heartbeat=utcnow()))


def test_profiling_job_rejects_unknown_names_and_bad_shapes(client, keys):
    _online_node()
    headers = {"Authorization": f"Bearer {keys['client']}"}
    cases = [
        (
            {"models": ["zoo:lm-tiny"], "methods": ["quant.int8_dynamc"], "workloads": [GOOD_WORKLOAD]},
            "did you mean quant.int8_dynamic",
        ),
        ({"models": ["zoo:gpt-5"], "methods": ["baseline"], "workloads": [GOOD_WORKLOAD]}, "unknown models: zoo:gpt-5"),
        (
            {"models": ["zoo:lm-tiny"], "methods": ["baseline"], "workloads": [{"batch_size": 0}]},
            "workloads[1]: workload lm-generate: field 'batch_size' must lie in [1, 512]",
        ),
        (
            {"models": ["zoo:lm-tiny"], "methods": ["baseline"], "workloads": [{"colour": "red"}]},
            "unknown fields colour",
        ),
        (
            {"models": ["zoo:lm-tiny"], "methods": ["baseline"], "workloads": [{"kind": "lm-video"}]},
            "unknown workload kind 'lm-video'",
        ),
        (
            {
                "models": ["zoo:lm-tiny"],
                "methods": ["serve.continuous_batching"],
                "workloads": [{"kind": "lm-stream", "max_batch": 0}],
            },
            "field 'max_batch' must lie in [1, 512]",
        ),
        (
            {
                "models": ["zoo:lm-tiny"],
                "methods": [{"method": "baseline", "params": {"evil": 1}}],
                "workloads": [GOOD_WORKLOAD],
            },
            "unknown params",
        ),
        (
            {"models": ["zoo:lm-tiny"], "methods": ["baseline"], "workloads": [GOOD_WORKLOAD], "nodes": ["ghost"]},
            "unknown nodes: ghost",
        ),
        ({"models": ["zoo:lm-tiny"], "methods": ["baseline"], "workloads": [GOOD_WORKLOAD], "reps": 2}, "reps"),
    ]
    for body, message in cases:
        response = client.post("/v1/profiling-jobs", json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        assert message in response.json()["detail"], (message, response.json())
    assert _jobs() == 0


def test_profiling_job_plans_one_item_per_task_and_class(client, keys):
    _online_node()
    headers = {"Authorization": f"Bearer {keys['client']}"}
    body = {
        "models": ["zoo:lm-tiny"],
        "methods": ["baseline", "quant.int8_dynamic"],
        "workloads": [GOOD_WORKLOAD, {**GOOD_WORKLOAD, "gen_len": 8}],
    }
    job = client.post("/v1/profiling-jobs", json=body, headers=headers).json()
    assert (job["total"], job["state"], job["done"]) == (2, "queued", 0)
    with session_scope() as session:
        items = session.get(Job, job["id"]).spec["items"]
    assert {i["target"]["name"] for i in items} == {"cpu-x-t1"}
    assert [m["method"] for m in items[0]["methods"]] == ["baseline", "quant.int8_dynamic"]
    cancelled = client.delete(f"/v1/profiling-jobs/{job['id']}", headers=headers).json()
    assert cancelled["state"] == "cancelled"
    assert client.delete(f"/v1/profiling-jobs/{job['id']}", headers=headers).status_code == 200
    assert client.get("/v1/profiling-jobs/nope", headers=headers).json()["code"] == "not_found"


def test_profiling_jobs_take_every_workload_kind(client, keys):
    _online_node()
    headers = {"Authorization": f"Bearer {keys['client']}"}
    body = {
        "models": ["zoo:lm-tiny", "zoo:minilm-l6"],
        "methods": ["baseline", "quant.int8_dynamic"],
        "workloads": [
            {"kind": "encoder-embed", "batch_size": 2, "seq_len": 32},
            {"kind": "lm-stream", "requests": 4, "load": 2, "max_batch": 2, "prompt_lens": [8, 16]},
            {"kind": "lm-longctx", "prompt_len": 1024},
        ],
    }
    job = client.post("/v1/profiling-jobs", json=body, headers=headers).json()
    assert job["total"] == 6  # 2 models × 3 workloads on the one class; fit is each worker's to judge
    with session_scope() as session:
        shapes = [i["workload"] for i in session.get(Job, job["id"]).spec["items"]]
    assert {s["kind"] for s in shapes} == {"encoder-embed", "lm-stream", "lm-longctx"}
    stream = next(s for s in shapes if s["kind"] == "lm-stream")
    assert stream["prompt_lens"] == [8, 16] and stream["objective"] == "throughput"  # defaults filled in


def test_runs_and_recommendations_need_known_models_and_an_advisor(client, keys):
    headers = {"Authorization": f"Bearer {keys['client']}"}
    response = client.post("/v1/runs", json={"model": "zoo:nope", "prompts": ["x"]}, headers=headers)
    assert response.status_code == 422 and "unknown models" in response.json()["detail"]
    response = client.post("/v1/runs", json={"model": "zoo:lm-tiny", "prompts": [""]}, headers=headers)
    assert response.status_code == 422
    response = client.post(
        "/v1/runs", json={"model": "zoo:lm-tiny", "prompts": ["x"], "method": "auto"}, headers=headers
    )
    assert response.status_code == 409 and "no advisor" in response.json()["detail"]
    response = client.post(
        "/v1/recommendations", json={"model": "zoo:lm-tiny", "workload": GOOD_WORKLOAD}, headers=headers
    )
    assert response.status_code == 409
    assert client.get("/v1/runs/nope", headers=headers).status_code == 404
    assert client.get("/v1/advisor/evaluation", headers=headers).status_code == 404
    assert _jobs() == 0


def test_named_runs_queue_a_job_for_the_pool(client, keys):
    headers = {"Authorization": f"Bearer {keys['client']}"}
    run = client.post(
        "/v1/runs",
        json={"model": "zoo:lm-tiny", "prompts": ["def f():"], "method": ["quant.int8_dynamic"], "max_new_tokens": 4},
        headers=headers,
    )
    assert run.status_code == 202, run.text
    body = run.json()
    assert body["state"] == "queued" and body["method"] == "quant.int8_dynamic" and body["outputs"] is None
    assert client.get(f"/v1/runs/{body['id']}", headers=headers).json()["id"] == body["id"]


def test_enough_new_records_retrain_the_advisor(client, keys, monkeypatch):
    from advisor.synthetic import synthetic_records
    from api.training import maybe_retrain
    from profiles.transfer import add_records

    with session_scope() as session:
        add_records(session, enumerate(synthetic_records(n_models=4, n_workloads=3, n_hardware=2), start=1))
    maybe_retrain(every_n=10_000)
    assert _jobs() == 0  # not enough new records yet
    maybe_retrain(every_n=10)
    with session_scope() as session:
        job_id = session.exec(select(Job.id).where(Job.kind == "train")).one()
    headers = {"Authorization": f"Bearer {keys['client']}"}
    for _ in range(600):
        state = client.get(f"/v1/jobs/{job_id}", headers=headers).json()["state"]
        if state != "running":
            break
        time.sleep(0.2)
    assert state == "succeeded"
    versions = client.get("/v1/advisor/versions", headers=headers).json()
    assert len(versions) == 1 and versions[0]["active"]
    evaluation = client.get("/v1/advisor/evaluation", headers=headers).json()
    assert evaluation["advisor_version"] == versions[0]["id"]


def test_plan_auto_job_holds_the_planners_cells_and_a_grid_must_name_its_cells(client, keys):
    from advisor.synthetic import synthetic_records
    from profiles.transfer import add_records

    model, hidden = "syn-lm-000", "sys.compile"  # hidden: the one method never measured on the model
    records = [
        r
        for r in synthetic_records(n_models=4, n_workloads=3, n_hardware=2, seed=4)
        if not (r["model_id"] == model and r["method_id"] == hidden)
    ]
    classes = sorted({r["hardware_class"] for r in records})
    with session_scope() as session:
        add_records(session, enumerate(records, start=1))
        for n, hardware_class in enumerate(classes):
            session.add(Node(id=f"w{n}", hardware_class=hardware_class, last_heartbeat=utcnow()))
    headers = {"Authorization": f"Bearer {keys['client']}"}
    body = {"models": [model], "plan": "auto", "max_cells": 3, "hardware_classes": classes}
    job = client.post("/v1/profiling-jobs", json=body, headers=headers)
    assert job.status_code == 201, job.text
    with session_scope() as session:
        items = session.get(Job, job.json()["id"]).spec["items"]
    assert items and sum(len(i["methods"]) for i in items) <= 3
    assert {m["method"] for i in items for m in i["methods"]} == {hidden}
    assert {i["target"]["name"] for i in items} <= set(classes) and all(i["model"] == model for i in items)
    nothing = client.post("/v1/profiling-jobs", json={**body, "methods": ["lm.spec.swift"]}, headers=headers)
    assert nothing.status_code == 422 and "no unmeasured cell" in nothing.json()["detail"]
    bare_grid = client.post("/v1/profiling-jobs", json={"models": [model], "methods": ["baseline"]}, headers=headers)
    assert bare_grid.status_code == 422 and 'plan "grid" needs' in bare_grid.json()["detail"]


def test_a_run_of_a_named_method_keeps_the_advisors_prediction_for_it(client, keys):
    from advisor.synthetic import synthetic_records
    from advisor.versions import train_advisor
    from profiles.transfer import add_records

    records = list(synthetic_records(n_models=4, n_workloads=2, n_hardware=1))
    with session_scope() as session:
        add_records(session, enumerate(records, start=1))
        train_advisor(session, size="small", evaluate_splits=())
        session.add(Node(id="w1", hardware_class=records[0]["hardware_class"], last_heartbeat=utcnow()))
    headers = {"Authorization": f"Bearer {keys['client']}"}
    body = {"model": "syn-lm-000", "prompts": ["def f():"], "method": "quant.int8_dynamic", "node": "w1"}
    run = client.post("/v1/runs", json=body, headers=headers)
    assert run.status_code == 202, run.text
    with session_scope() as session:
        spec = session.get(Job, run.json()["id"]).spec
    workload = spec["items"][0]["workload"]
    answer = client.post(
        "/v1/recommendations",
        json={"model": "syn-lm-000", "workload": workload, "node": "w1", "top_k": 50},
        headers=headers,
    ).json()
    predicted = next(c for c in answer["candidates"] if c["method_id"] == "quant.int8_dynamic")
    assert spec["prediction"]["method_id"] == "quant.int8_dynamic" and spec["recommendation"] is None
    assert spec["prediction"]["speedup"] == predicted["speedup"]
    assert spec["prediction"]["speedup_interval"] == predicted["speedup_interval"]
