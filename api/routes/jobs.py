"""Batch profiling jobs for clients; item claim/report endpoints for workers."""

from __future__ import annotations

import itertools

from fastapi import APIRouter
from sqlmodel import Session, select

from api.auth import ClientKey, WorkerKey
from api.catalog import resolve_methods, resolve_models, resolve_workloads
from api.errors import NotFound, Unprocessable
from api.jobs import cancel_job, claim_item, complete_item, job_public, new_job, requeue_queue
from api.routes.workers import queue_name
from api.schemas import ItemResult, JobPublic, ProfilingJobCreate
from api.training import maybe_retrain
from executors.celery_app import send_item
from profiles.db import session_scope
from profiles.models import Job, Node, ProfileRun
from profiles.settings import get_settings

router = APIRouter(tags=["jobs"])


def _targets(session: Session, body: ProfilingJobCreate) -> list[dict]:
    if body.pool:
        return [{"kind": "pool", "name": "pool"}]
    if body.nodes:
        known = {n.id for n in session.exec(select(Node).where(Node.id.in_(body.nodes)))}
        missing = sorted(set(body.nodes) - known)
        if missing:
            raise Unprocessable(f"unknown nodes: {', '.join(missing)}")
        return [{"kind": "node", "name": n} for n in body.nodes]
    classes = body.hardware_classes or sorted(
        {n.hardware_class for n in session.exec(select(Node).where(Node.status == "online"))}
    )
    if not classes:
        raise Unprocessable("no worker is online and no hardware_classes were named; start a worker first")
    return [{"kind": "class", "name": c} for c in classes]


def _stored(session: Session, model: str, workload_id: str, hardware_class: str) -> set[tuple[str, str]]:
    """(method id, canonical config) already measured for this task on this class: skipped on resume."""
    from profiles.models import canonical_json

    rows = session.exec(
        select(ProfileRun.method_id, ProfileRun.config).where(
            ProfileRun.model_id == model,
            ProfileRun.workload_id == workload_id,
            ProfileRun.hardware_class == hardware_class,
            ProfileRun.status.in_(("ok", "not-applicable")),
        )
    )
    return {(m, canonical_json(c)) for m, c in rows}


def plan_items(session: Session, body: ProfilingJobCreate) -> list[dict]:
    from profiles.models import canonical_json

    models = resolve_models(session, body.models)
    methods = resolve_methods(body.methods)
    workloads = resolve_workloads(body.workloads)
    items = []
    for model, workload, target in itertools.product(models, workloads, _targets(session, body)):
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


def _queue(target: dict) -> str:
    return "pool" if target["kind"] == "pool" else queue_name(target["kind"], target["name"])


@router.post("/profiling-jobs", status_code=201, response_model=JobPublic)
def create_profiling_job(body: ProfilingJobCreate, _key: ClientKey) -> dict:
    with session_scope() as session:
        items = plan_items(session, body)
        job = new_job(session, "profiling", items, {"request": body.model_dump()})
        public, job_id = job_public(job), job.id
    for index, item in enumerate(items):  # after commit: a worker must find the item it is sent
        send_item(job_id, index, _queue(item["target"]))
    return public


@router.get("/profiling-jobs", response_model=list[JobPublic])
def list_profiling_jobs(_key: ClientKey, limit: int = 50) -> list[dict]:
    with session_scope() as session:
        jobs = session.exec(
            select(Job).where(Job.kind == "profiling").order_by(Job.created_at.desc()).limit(min(limit, 500))
        )
        return [job_public(j) for j in jobs]


def _job(session: Session, job_id: str, kind: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.kind != kind:
        raise NotFound(f"no {kind} job {job_id!r}")
    return job


@router.get("/profiling-jobs/{job_id}", response_model=JobPublic)
def get_profiling_job(job_id: str, _key: ClientKey) -> dict:
    with session_scope() as session:
        return job_public(_job(session, job_id, "profiling"))


@router.delete("/profiling-jobs/{job_id}", response_model=JobPublic)
def cancel_profiling_job(job_id: str, _key: ClientKey) -> dict:
    with session_scope() as session:
        _job(session, job_id, "profiling")
        return job_public(cancel_job(session, job_id))


@router.post("/jobs/{job_id}/items/{index}/claim")
def claim(job_id: str, index: int, key: WorkerKey) -> dict:
    with session_scope() as session:
        return claim_item(session, job_id, index, key.node_id)


@router.post("/jobs/{job_id}/items/{index}/result")
def report(job_id: str, index: int, body: ItemResult, key: WorkerKey) -> dict:
    with session_scope() as session:
        answer, requeue = complete_item(
            session,
            job_id,
            index,
            key.node_id,
            body.records,
            body.outputs,
            body.error,
            get_settings().max_item_attempts,
        )
        queue = requeue_queue(session, session.get(Job, job_id).spec["items"][index]) if requeue else None
    if queue is not None:
        send_item(job_id, index, queue)
    if answer.get("added"):
        maybe_retrain(get_settings().retrain_every_n)
    return answer
