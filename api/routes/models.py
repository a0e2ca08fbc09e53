"""A user's own model: register it (a folder under the model root, a config.json alone, or an
uploaded folder), then profile it in one call so the advisor's answer for it becomes measured."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile
from sqlmodel import Session

from api.auth import ClientKey
from api.deps import SessionDep
from api.dispatch import dispatch
from api.errors import NotFound
from api.jobs import job_public, new_job, sends_of
from api.local_models import register_config, register_folder, register_upload
from api.model_profiling import cheapest_workload, classes_to_measure, entry, needs_weights, top_candidates
from api.routes.advise import recommend_for
from api.routes.jobs import plan_items
from api.schemas import JobPublic, ModelProfile, ModelPublic, ModelRegister, ProfilingJobCreate
from profiles.db import session_scope
from profiles.models import ModelSpec
from profiles.settings import get_settings

router = APIRouter(tags=["models"])
BASELINE = "baseline"


@router.post("/models", status_code=201, response_model=ModelPublic)
def register_model(body: ModelRegister, session: SessionDep, _key: ClientKey) -> ModelSpec:
    """Registers a Hugging Face checkpoint folder from under ACCEL_MODEL_ROOT (id `local:<folder>`), or a
    config.json alone (id `config:<name>`: advice from its descriptors, nothing to run)."""
    if body.path is not None:
        return register_folder(session, get_settings().model_root, body.path)
    assert body.config is not None  # ModelRegister holds exactly one of them
    return register_config(session, body.config, body.name)


@router.post("/models/upload", status_code=201, response_model=ModelPublic)
def upload_model(
    files: Annotated[list[UploadFile], File(description="config.json, the *.safetensors weights, tokenizer files")],
    session: SessionDep,
    _key: ClientKey,
) -> ModelSpec:
    """Registers an uploaded checkpoint folder (multipart, one part per file; at most ACCEL_MAX_UPLOAD_BYTES
    in all), stored under the data dir by its weights' hash (id `local:<that folder>`)."""
    settings = get_settings()
    return register_upload(
        session, settings.upload_dir, [(f.filename, f.file) for f in files], settings.max_upload_bytes
    )


def plan_model_profile(session: Session, model_id: str, body: ModelProfile) -> tuple[dict, list]:
    """The predicted top-k and the baseline on the task, on the classes a run could go to."""
    model = session.get(ModelSpec, model_id)
    if model is None:
        raise NotFound(f"no registered model {model_id!r}; register it with POST /v1/models first")
    needs_weights(model)
    shape = body.workload or cheapest_workload(model)
    answer = recommend_for(session, model_id, shape, body.node, body.hardware_class, "latency", None, None, 50)
    chosen = top_candidates(answer, body.top_k)
    classes = classes_to_measure(answer, chosen)
    request = ProfilingJobCreate(
        models=[model_id],
        methods=[BASELINE, *(entry(c) for c in chosen)],
        workloads=[shape],
        nodes=[body.node] if body.node else None,
        hardware_classes=None if body.node else classes,
        reps=body.reps,
    )
    predicted = [{k: c[k] for k in ("method_id", "node_id", "speedup", "basis")} for c in chosen]
    purpose = {"model": model_id, "advisor_version": answer["advisor_version"], "retrain_when_done": True,
               "predicted": predicted}  # fmt: skip
    job = new_job(
        session, "profiling", plan_items(session, request), {"request": request.model_dump(), "purpose": purpose}
    )
    return job_public(job, session), sends_of(job)


@router.post("/models/{model_id:path}/profile", status_code=201, response_model=JobPublic)
def profile_model(model_id: str, body: ModelProfile, _key: ClientKey) -> dict:
    """Queues the cheapest profiling job that makes the advice for this model sure: the advisor's top
    candidates (top_k) and the baseline on the workload; when it finishes the advisor retrains, and
    the answer for that task is the measurement."""
    with session_scope() as session:
        public, sends = plan_model_profile(session, model_id, body)
    dispatch(sends)  # after commit: a worker must find the item it is sent
    return public
