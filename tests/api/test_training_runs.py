"""A run of a training recipe: POST /v1/runs with a train-to-target workload queues a training job;
bad combinations are a 422 with nothing written; the worker trains it to a checkpoint."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import func, select

from profiles.db import session_scope
from profiles.models import Job

WORKLOAD = {"kind": "train-to-target", "batch_size": 8, "budget_steps": 16, "eval_every": 4, "target": 5.0}


def _jobs() -> int:
    with session_scope() as session:
        return session.exec(select(func.count()).select_from(Job)).one()


def test_a_training_run_queues_its_workload_for_the_pool(client, keys):
    headers = {"Authorization": f"Bearer {keys['client']}"}
    body = {"model": "zoo:train-lm-code", "workload": WORKLOAD, "method": "train.optim.adabelief", "seed": 3}
    run = client.post("/v1/runs", json=body, headers=headers)
    assert run.status_code == 202, run.text
    assert run.json()["method"] == "train.optim.adabelief" and run.json()["state"] == "queued"
    with session_scope() as session:
        job = session.get(Job, run.json()["id"])
        assert job is not None
        item = job.spec["items"][0]
    assert _jobs() == 1
    assert item["workload"]["kind"] == "train-to-target" and item["workload"]["target"] == 5.0
    assert item["prompts"] == [] and item["seed"] == 3 and item["method"]["method"] == "train.optim.adabelief"


def test_bad_training_runs_are_refused_and_write_nothing(client, keys):
    headers = {"Authorization": f"Bearer {keys['client']}"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "zoo:train-lm-code", "prompts": ["x"]}, "trains it"),
        ({"model": "zoo:train-lm-code", "prompts": ["x"], "workload": WORKLOAD}, "either prompts"),
        ({"model": "zoo:lm-tiny", "workload": WORKLOAD}, "generates text"),
        ({"model": "zoo:train-lm-code", "workload": {"kind": "lm-generate", "batch_size": 1}}, "does not run on"),
        ({"model": "zoo:train-lm-code", "workload": {**WORKLOAD, "tuning_lrs": 9}}, "tuning_lrs"),
    ]
    for body, said in cases:
        response = client.post("/v1/runs", json={**body, "method": "train.reference"}, headers=headers)
        assert response.status_code == 422, (body, response.text)
        assert said in str(response.json()["detail"]), (said, response.json())
    assert _jobs() == 0


@pytest.fixture
def patient(monkeypatch):
    """The API's reaper leaves the node be while it trains (the test does not run a heartbeat thread)."""
    from profiles.settings import get_settings

    monkeypatch.setenv("ACCEL_NODE_LOST_AFTER_S", "3600")
    get_settings.cache_clear()


@pytest.mark.slow
def test_a_claimed_training_run_reports_its_checkpoint_and_figures(patient, client, keys):
    """The whole path: POST /v1/runs, a worker claims the item and trains it (executors.worker.run_item),
    its report is stored, and GET /v1/runs/{id} answers with the checkpoint id and the run's figures."""
    from api.jobs import claim_item, complete_item
    from executors.worker import WorkerContext, run_item
    from profiles.models import Node, utcnow

    headers = {"Authorization": f"Bearer {keys['client']}"}
    body = {"model": "zoo:train-lm-code", "workload": {**WORKLOAD, "tuning_lrs": 1}, "method": "train.optim.exadam"}
    run_id = client.post("/v1/runs", json=body, headers=headers).json()["id"]
    with session_scope() as session:
        session.add(Node(id="w-train", hardware_class="cpu-t1", last_heartbeat=utcnow()))
    with session_scope() as session:
        claimed = claim_item(session, run_id, 0, session.get_one(Node, "w-train"))
        node = session.get_one(Node, "w-train").model_dump(mode="json")
    answer = run_item(WorkerContext(server="http://unused", key="unused", node=node), claimed["item"])
    with session_scope() as session:
        node_row = session.get_one(Node, "w-train")
        complete_item(session, run_id, 0, node_row, claimed["claim"], answer["records"], answer["outputs"], None, 3)
    run = client.get(f"/v1/runs/{run_id}", headers=headers).json()
    assert run["state"] == "succeeded" and run["method"] == "train.optim.exadam"
    checkpoint, figures = run["outputs"]["checkpoint"], run["outputs"]["figures"]
    assert checkpoint["id"].startswith("ckpt-") and checkpoint["format"] == "safetensors"
    assert figures["steps"] == WORKLOAD["budget_steps"] and figures["target"] == WORKLOAD["target"]
    assert figures["metric"] == "heldout_loss" and 0 < figures["final_metric"] < 6  # bytes: ln 256 ≈ 5.5 untrained
    assert figures["reached_target"] == (figures["final_metric"] <= 5.0 or figures["steps_to_target"] is not None)
