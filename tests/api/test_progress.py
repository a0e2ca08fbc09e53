"""Progress reports of a running item: only from the claimant, stored as its stage, shown with an
estimate on the admin UI's job page, and gone once the item is reported or claimed anew."""

from __future__ import annotations

from api_helpers import profile_item

from api.jobs import new_job
from api.ui.views import progress_of
from profiles.db import session_scope
from profiles.models import Job

POOL = {"kind": "pool", "name": "pool"}


def _join(client, token: str, node_id: str) -> dict:
    body = {"join_token": token, "node_id": node_id, "hardware_class": "cpu-progress-t1"}
    response = client.post("/v1/workers/join", json=body)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['worker_key']}"}


def _job() -> str:
    with session_scope() as session:
        return new_job(session, "profiling", [profile_item(POOL)]).id


def _item(job_id: str) -> tuple[Job, dict]:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
    return job, job.result["items"]["0"]


def test_only_the_claimant_reports_progress_and_it_shows_with_an_estimate(client, keys, join_token):
    first, second = _join(client, join_token, "p1"), _join(client, join_token, "p2")
    job_id = _job()
    claim = client.post(f"/v1/jobs/{job_id}/items/0/claim", headers=first).json()["claim"]
    path = f"/v1/jobs/{job_id}/items/0/progress"
    report = {"claim": claim, "stage": "measuring", "detail": "pass 1 of 2", "fraction": 0.5}
    assert client.post(path, json=report, headers=first).json() == {"accepted": True}
    assert client.post(path, json=report, headers=second).status_code == 409  # another node, same claim
    assert client.post(path, json={**report, "claim": "0" * 16}, headers=first).status_code == 409
    assert client.post(path, json={**report, "fraction": 1.5}, headers=first).status_code == 422
    assert client.post(path, json=report, headers={"Authorization": f"Bearer {keys['client']}"}).status_code == 403
    job, state = _item(job_id)
    assert state["progress"]["stage"] == "measuring" and state["progress"]["detail"] == "pass 1 of 2"
    shown = progress_of(state, job)
    assert shown is not None
    assert shown["stage"] == "measuring" and shown["eta_s"] is not None and shown["eta_s"] >= 0
    # The admin UI's job page says it, in the item's row.
    client.post("/ui/login", data={"key": keys["admin"]})
    page = client.get(f"/ui/partials/jobs/{job_id}").text
    assert "measuring" in page and "pass 1 of 2" in page and "left" in page


def test_a_stage_keeps_its_start_and_a_new_claim_starts_afresh(client, join_token):
    worker = _join(client, join_token, "p3")
    job_id = _job()
    claim = client.post(f"/v1/jobs/{job_id}/items/0/claim", headers=worker).json()["claim"]
    path = f"/v1/jobs/{job_id}/items/0/progress"
    client.post(path, json={"claim": claim, "stage": "measuring", "fraction": 0.25}, headers=worker)
    started = _item(job_id)[1]["progress"]["stage_started_at"]
    client.post(path, json={"claim": claim, "stage": "measuring", "fraction": 0.5}, headers=worker)
    assert _item(job_id)[1]["progress"]["stage_started_at"] == started  # the estimate is over the whole stage
    client.post(path, json={"claim": claim, "stage": "storing"}, headers=worker)
    assert _item(job_id)[1]["progress"]["stage"] == "storing"
    error = client.post(f"/v1/jobs/{job_id}/items/0/result", json={"claim": claim, "error": "boom"}, headers=worker)
    assert error.json()["requeued"] is True
    assert client.post(path, json={"claim": claim, "stage": "measuring"}, headers=worker).status_code == 409
    client.post(f"/v1/jobs/{job_id}/items/0/claim", headers=worker)
    job, state = _item(job_id)
    assert "progress" not in state and (progress_of(state, job) or {}).get("stage") == "claimed, starting"
