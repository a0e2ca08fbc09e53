"""Batch profiling jobs for clients; item claim/report endpoints for workers."""

from __future__ import annotations

import itertools
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlmodel import Session, col, select

from api.auth import ClientKey, WorkerKey
from api.catalog import resolve_methods, resolve_models, resolve_workloads
from api.dispatch import dispatch
from api.errors import NotFound, Unprocessable
from api.jobs import cancel_job, claim_item, complete_item, item_queue, job_public, new_job, report_progress, sends_of
from api.model_profiling import retrain_if_finished
from api.routes.workers import own_node
from api.schemas import ItemClaim, ItemProgress, ItemReport, ItemResult, JobPublic, ProfilingJobCreate
from api.training import maybe_retrain, planned_items
from profiles.db import read_scope, session_scope
from profiles.models import Job, Node, ProfileRun
from profiles.settings import get_settings

router = APIRouter(tags=["jobs"])


def _targets(session: Session, body: ProfilingJobCreate) -> list[dict]:
    if body.pool:
        return [{"kind": "pool", "name": "pool"}]
    live = ("online", "lost", "left")  # nodes that may serve again; removed and imported ones never will
    if body.nodes:
        known = {
            n.id for n in session.exec(select(Node).where(col(Node.id).in_(body.nodes), col(Node.status).in_(live)))
        }
        missing = sorted(set(body.nodes) - known)
        if missing:
            raise Unprocessable(f"unknown nodes: {', '.join(missing)}")
        return [{"kind": "node", "name": n} for n in dict.fromkeys(body.nodes)]
    if body.hardware_classes:
        # A class no worker ever joined with would wait forever: refused. A known class whose nodes
        # are offline now is accepted, and the job says it waits for that class (waiting_for).
        named = list(dict.fromkeys(body.hardware_classes))
        known = {n.hardware_class for n in session.exec(select(Node).where(col(Node.hardware_class).in_(named)))}
        joined = {c for c in known if _ever_joined(session, c)}
        missing = [c for c in named if c not in joined]
        if missing:
            raise Unprocessable(f"no worker of hardware class {', '.join(missing)} has joined; nothing could run it")
        return [{"kind": "class", "name": c} for c in named]
    classes = sorted({n.hardware_class for n in session.exec(select(Node).where(Node.status == "online"))})
    if not classes:
        raise Unprocessable("no worker is online and no hardware_classes were named; start a worker first")
    return [{"kind": "class", "name": c} for c in classes]


def _ever_joined(session: Session, hardware_class: str) -> bool:
    live = ("online", "lost", "left")
    return (
        session.exec(select(Node).where(Node.hardware_class == hardware_class, col(Node.status).in_(live))).first()
        is not None
    )


def _stored(session: Session, model: str, workload_id: str, hardware_class: str) -> set[tuple[str, str]]:
    """(method id, canonical config) already measured for this task on this class: skipped on resume."""
    from profiles.models import canonical_json

    rows = session.exec(
        select(ProfileRun.method_id, ProfileRun.config).where(
            ProfileRun.model_id == model,
            ProfileRun.workload_id == workload_id,
            ProfileRun.hardware_class == hardware_class,
            col(ProfileRun.status).in_(("ok", "not-applicable")),
        )
    )
    return {(m, canonical_json(c)) for m, c in rows}


def plan_items(session: Session, body: ProfilingJobCreate) -> list[dict]:
    from profiles.models import canonical_json

    models = resolve_models(session, body.models)
    methods = resolve_methods(body.methods)
    workloads = resolve_workloads(body.workloads)
    targets = _targets(session, body)
    if body.plan == "auto":
        method_ids = {m["id"] for m in methods} or None
        workload_ids = {w["id"] for w in workloads} or None
        return planned_items(session, models, method_ids, workload_ids, targets, body.max_cells, body.reps)
    limit = get_settings().max_job_items
    if len(models) * len(workloads) * len(targets) > limit:
        raise Unprocessable(
            f"this grid plans {len(models) * len(workloads) * len(targets)} items "
            f"(models × workloads × targets); one job may hold at most {limit}: split it"
        )
    items = []
    for model, workload, target in itertools.product(models, workloads, targets):
        todo = methods
        if target["kind"] == "class":
            done = _stored(session, model, workload["id"], target["name"])
            todo = [m for m in methods if (m["id"], canonical_json(m["config"])) not in done]
        if todo:
            items.append(
                {
                    "kind": "profile",
                    "model": model,
                    "workload": workload["shape"],
                    "methods": [m["config"] for m in todo],
                    "target": target,
                    "reps": body.reps,
                }
            )
    return items


@router.post("/profiling-jobs", status_code=201, response_model=JobPublic)
def create_profiling_job(body: ProfilingJobCreate, _key: ClientKey) -> dict:
    with session_scope() as session:
        items = plan_items(session, body)
        job = new_job(session, "profiling", items, {"request": body.model_dump()})
        public, sends = job_public(job, session), sends_of(job)
    dispatch(sends)  # after commit: a worker must find the item it is sent
    return public


@router.get("/profiling-jobs", response_model=list[JobPublic])
def list_profiling_jobs(_key: ClientKey, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict]:
    with read_scope() as session:
        jobs = session.exec(
            select(Job).where(Job.kind == "profiling").order_by(col(Job.created_at).desc()).limit(limit)
        )
        return [job_public(j, session) for j in jobs]


def _job(session: Session, job_id: str, kind: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.kind != kind:
        raise NotFound(f"no {kind} job {job_id!r}")
    return job


@router.get("/profiling-jobs/{job_id}", response_model=JobPublic)
def get_profiling_job(job_id: str, _key: ClientKey) -> dict:
    with read_scope() as session:
        return job_public(_job(session, job_id, "profiling"), session)


@router.delete("/profiling-jobs/{job_id}", response_model=JobPublic)
def cancel_profiling_job(job_id: str, _key: ClientKey) -> dict:
    with session_scope() as session:
        _job(session, job_id, "profiling")
        return job_public(cancel_job(session, job_id), session)


ItemIndex = Annotated[int, Path(ge=0, le=1_000_000)]


@router.post("/jobs/{job_id}/items/{index}/claim", response_model=ItemClaim, response_model_exclude_none=True)
def claim(job_id: str, index: ItemIndex, key: WorkerKey) -> dict:
    with session_scope() as session:
        return claim_item(session, job_id, index, own_node(session, key))


@router.post("/jobs/{job_id}/items/{index}/progress", response_model=ItemReport, response_model_exclude_none=True)
def progress(job_id: str, index: ItemIndex, body: ItemProgress, key: WorkerKey) -> dict:
    """The stage a claimed item is in (building model, measuring round k of n, …), from its claimant."""
    with session_scope() as session:
        node = own_node(session, key)
        return report_progress(session, job_id, index, node, body.claim, body.stage, body.detail, body.fraction)


@router.post("/jobs/{job_id}/items/{index}/result", response_model=ItemReport, response_model_exclude_none=True)
def report(job_id: str, index: ItemIndex, body: ItemResult, key: WorkerKey) -> dict:
    with session_scope() as session:
        answer, requeue = complete_item(
            session,
            job_id,
            index,
            own_node(session, key),
            body.claim,
            body.records,
            body.outputs,
            body.error,
            get_settings().max_item_attempts,
        )
        sends = [(job_id, index, item_queue(session.get_one(Job, job_id).spec["items"][index]))] if requeue else []
    dispatch(sends)
    with session_scope() as session:
        retrain = retrain_if_finished(session, job_id)  # a model's own profiling job asks for it
    if answer.get("added") or retrain:
        maybe_retrain(0 if retrain else get_settings().retrain_every_n)
    return answer
