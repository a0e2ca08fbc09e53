"""JSON for the pages' scripts under /ui/api: the session stands in for the API key, and every
handler calls the REST route's own function, so the UI adds no second copy of any rule."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from api.errors import NotFound
from api.jobs import job_public
from api.routes import access, advise, catalog, jobs
from api.schemas import (
    ApiKeyCreate,
    JoinTokenCreate,
    ProfilingJobCreate,
    RecommendationRequest,
    RunCreate,
)
from api.ui import views
from api.ui.session import UiKey
from profiles.db import session_scope
from profiles.models import Job

router = APIRouter(prefix="/ui/api", include_in_schema=False)


@router.get("/dashboard")
def dashboard(_key: UiKey) -> dict:
    with session_scope() as session:
        return views.dashboard(session)


@router.get("/jobs")
def list_jobs(_key: UiKey, kind: str | None = None) -> list[dict]:
    with session_scope() as session:
        return views.recent_jobs(session, 30, kind)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, _key: UiKey) -> dict:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return advise.run_public(session, job) if job.kind == "run" else job_public(job)


@router.post("/profiling-jobs", status_code=201)
def create_profiling_job(body: ProfilingJobCreate, key: UiKey) -> dict:
    return jobs.create_profiling_job(body, key)


@router.delete("/profiling-jobs/{job_id}")
def cancel_profiling_job(job_id: str, key: UiKey) -> dict:
    return jobs.cancel_profiling_job(job_id, key)


@router.post("/recommendations")
def recommendations(body: RecommendationRequest, key: UiKey) -> dict:
    return advise.recommendations(body, key)


@router.post("/runs", status_code=202)
def create_run(body: RunCreate, key: UiKey) -> dict:
    return advise.create_run(body, key)


@router.post("/advisor/train", status_code=202)
def train(key: UiKey) -> dict:
    return advise.advisor_train(key)


@router.post("/keys", status_code=201)
def create_key(body: ApiKeyCreate, key: UiKey) -> dict:
    with session_scope() as session:
        created = access.create_key(body, session, key)
        return {"id": created["id"], "scope": created["scope"], "name": created["name"], "key": created["key"]}


@router.delete("/keys/{key_id}")
def revoke_key(key_id: str, key: UiKey) -> dict:
    with session_scope() as session:
        return access.revoke_key(key_id, session, key).model_dump(mode="json", exclude={"key_hash"})


@router.post("/join-tokens", status_code=201)
def create_token(body: JoinTokenCreate, key: UiKey) -> dict:
    with session_scope() as session:
        created = access.create_token(body, session, key)
        return {"id": created["id"], "note": created["note"], "token": created["token"]}


@router.delete("/join-tokens/{token_id}")
def revoke_token(token_id: str, key: UiKey) -> dict:
    with session_scope() as session:
        return access.revoke_token(token_id, session, key).model_dump(mode="json", exclude={"token_hash"})


@router.get("/profiles/export")
def export_profiles(
    key: UiKey,
    format: Literal["jsonl", "csv"] = "csv",
    model_id: str | None = None,
    method_id: str | None = None,
    hardware_class: str | None = None,
    workload_id: str | None = None,
):
    with session_scope() as session:
        return catalog.export_profiles(session, key, format, model_id, method_id, hardware_class, workload_id, None)
