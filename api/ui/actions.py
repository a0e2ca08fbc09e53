"""JSON for the pages' scripts under /ui/api: the session stands in for the API key, and every
handler calls the REST route's own function, so the UI adds no second copy of any rule. What the
UI adds is words and context: reasons in words beside the raw contributions, a model's advice on
its family's cheapest workload."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from api.errors import NotFound, Unprocessable
from api.jobs import job_public
from api.model_profiling import cheapest_workload
from api.routes import access, advise, catalog, jobs, models
from api.schemas import (
    ApiKeyCreate,
    JoinTokenCreate,
    ModelProfile,
    ModelRegister,
    ProfilingJobCreate,
    RecommendationRequest,
    RunCreate,
)
from api.ui import views
from api.ui.session import UiKey
from api.ui.words import basis_words, reason, workload_words
from profiles.db import read_scope, session_scope
from profiles.models import Job, ModelSpec

router = APIRouter(prefix="/ui/api", include_in_schema=False)
ADVICE_TOP_K = 8  # enough to see past the top three that "Profile it" measures


@router.get("/dashboard")
def dashboard(_key: UiKey) -> dict:
    with session_scope() as session:
        return views.dashboard(session)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, _key: UiKey) -> dict:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if job.kind == "run":
            return advise.run_public(session, job)
        # a training job also says which version it made and whether the gate let it be activated
        extra = {k: job.result.get(k) for k in ("advisor_version", "activated", "gate")} if job.kind == "train" else {}
        return {**job_public(job), **extra}


@router.post("/profiling-jobs", status_code=201)
def create_profiling_job(body: ProfilingJobCreate, key: UiKey) -> dict:
    return jobs.create_profiling_job(body, key)


@router.delete("/profiling-jobs/{job_id}")
def cancel_profiling_job(job_id: str, key: UiKey) -> dict:
    return jobs.cancel_profiling_job(job_id, key)


@router.post("/recommendations")
def recommendations(body: RecommendationRequest, key: UiKey) -> dict:
    """The REST answer, plus each candidate's reasons in words (the raw pairs stay beside them)."""
    with read_scope() as session:
        result = advise.recommendation(session, body)
    for candidate in result["candidates"]:
        candidate["reasons"] = [reason(feature, effect) for feature, effect in candidate["contributions"]]
    return result


@router.post("/models", status_code=201)
def register_model(body: ModelRegister, key: UiKey) -> dict:
    with session_scope() as session:
        return models.register_model(body, session, key).model_dump(mode="json")


@router.get("/models/{model_id:path}/advice")
def model_advice(model_id: str, _key: UiKey) -> dict:
    """The REST answer for a registered model on its family's cheapest workload (the one its profiling
    job measures by default), with the workload, the reasons and each candidate's basis in words."""
    with read_scope() as session:
        model = session.get(ModelSpec, model_id)
        if model is None:
            raise NotFound(f"no registered model {model_id!r}")
        try:
            shape = cheapest_workload(model)
        except KeyError as exc:  # a family only imported profiles know: no workload of its own to ask about
            raise Unprocessable(str(exc.args[0])) from None
        result = advise.recommend_for(session, model_id, shape, None, None, "latency", None, None, ADVICE_TOP_K)
    result["workload_words"] = workload_words(result["workload"].get("kind") or "", result["workload"])
    for candidate in result["candidates"]:
        candidate["reasons"] = [reason(feature, effect) for feature, effect in candidate["contributions"]]
        candidate["basis_words"] = basis_words(candidate["basis"])
    return result


@router.post("/models/{model_id:path}/profile", status_code=201)
def profile_model(model_id: str, body: ModelProfile, key: UiKey) -> dict:
    return models.profile_model(model_id, body, key)


@router.post("/runs", status_code=202)
def create_run(body: RunCreate, key: UiKey) -> dict:
    """The REST run (which keeps the advisor's prediction for a named method beside it)."""
    return advise.create_run(body, key)


@router.post("/advisor/train", status_code=202)
def train(key: UiKey, force: bool = False) -> dict:
    return advise.advisor_train(key, force)


@router.post("/advisor/versions/{version_id}/activate")
def activate(version_id: str, key: UiKey) -> dict:
    return advise.activate_advisor_version(version_id, key)


@router.post("/advisor/versions/{version_id}/compare/{other_id}")
def compare(version_id: str, other_id: str, key: UiKey) -> dict:
    return advise.compare_advisor_versions(version_id, other_id, key)


@router.post("/advisor/rollback")
def rollback(key: UiKey) -> dict:
    return advise.rollback_advisor(key)


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
