"""Advisor retraining in the API process: on demand, and after every N new profile records; and the
cells a profiling job with ``plan: auto`` measures (the advisor's planner).

Training reads only the store and takes seconds to a minute, so a background thread (one at a
time) is enough; its progress is a Job of kind "train". The service answers from the active
version meanwhile; activation flips one flag in one transaction.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from sqlmodel import Session, func, select

from api.errors import Conflict, Unprocessable
from api.jobs import job_public, locked_job, new_job, save_item, set_progress
from profiles.db import default_engine, session_scope
from profiles.models import AdvisorVersion, Job, Node, ProfileRun, utcnow
from profiles.transfer import iter_records

log = logging.getLogger(__name__)
_lock = threading.Lock()


def _train(job_id: str, engine, force: bool) -> None:
    from advisor.api import train_advisor

    def stage(name: str) -> None:
        _report_stage(engine, job_id, name)

    try:
        stage("reading profiles")
        with session_scope(engine) as session:  # a short read: SQLite writers must not wait on training
            records = list(iter_records(session))
        with session_scope(engine) as session:
            version = train_advisor(
                session, records=records, activate="force" if force else "if-not-worse", on_stage=stage
            )
            gate = version.evaluation.get("gate") or {}
            result = {
                "advisor_version": version.id,
                "n_profiles": version.n_profiles,
                "activated": version.active,
                "gate": gate.get("reason"),
            }
        state, error = "succeeded", None
    except ValueError as exc:  # e.g. nothing stored yet: a state of the data, not a bug
        log.warning("advisor not trained: %s", exc)
        state, result, error = "failed", {}, str(exc)
    except Exception as exc:  # recorded on the job; the previous advisor stays active
        log.exception("advisor training failed")
        state, result, error = "failed", {}, str(exc)
    finally:
        _lock.release()
    with session_scope(engine) as session:
        job = session.get_one(Job, job_id)
        job.state, job.error, job.finished_at = state, error, utcnow()
        job.done, job.failures = (1, 0) if state == "succeeded" else (0, 1)
        job.result = {**job.result, **result}
        session.add(job)


def _report_stage(engine, job_id: str, stage: str) -> None:
    """The training job's stage, where the pages show it; a failed write never stops the training."""
    try:
        with session_scope(engine) as session:
            job = locked_job(session, job_id)
            state = dict(job.result["items"]["0"])
            set_progress(state, stage)
            save_item(job, 0, state)
            session.add(job)
    except Exception:
        log.warning("could not record training stage %r", stage, exc_info=True)


def start_training(force: bool = False) -> dict:
    """Starts a training job, or returns the one already running."""
    if not _lock.acquire(blocking=False):
        with session_scope() as session:
            running = session.exec(select(Job).where(Job.kind == "train", Job.state == "running")).first()
            if running is None:
                raise Conflict("a training run is just finishing; try again in a moment")
            return job_public(running)
    with session_scope() as session:
        job = new_job(session, "train", [{"kind": "train"}])
        job.state, job.started_at = "running", utcnow()
        session.add(job)
        public = job_public(job)
    # The engine is bound now: the thread must write to the store that started it.
    threading.Thread(
        target=_train, args=(public["id"], default_engine(), force), name="advisor-train", daemon=True
    ).start()
    return public


def maybe_retrain(every_n: int) -> None:
    """Retrains when at least ``every_n`` records arrived since the active advisor was trained."""
    with session_scope() as session:
        stored = session.exec(select(func.count()).select_from(ProfileRun)).one()
        trained_on = session.exec(select(AdvisorVersion.n_profiles).where(AdvisorVersion.active)).first() or 0
    if stored and stored - trained_on >= every_n and not _lock.locked():
        start_training()


def train_if_untrained() -> None:
    """On start: with stored profiles but no advisor (e.g. the shipped grid was just imported), train one."""
    with session_scope() as session:
        stored = session.exec(select(func.count()).select_from(ProfileRun)).one()
        active = session.exec(select(AdvisorVersion).where(AdvisorVersion.active)).first()
    if stored and active is None:
        start_training()


def planned_items(
    session: Session,
    models: list[str],
    method_ids: set[str] | None,
    workload_ids: set[str] | None,
    targets: list[dict],
    max_cells: int,
    reps: int,
) -> list[dict]:
    """A ``plan: auto`` profiling job's items: the planner's ``max_cells`` unmeasured (task, method)
    cells with the highest expected improvement of the recommendation per second of profiling, among
    the stored tasks of ``models`` on the targets' hardware classes (and the named methods and
    workloads, where given), one item per (model, workload, target)."""
    from advisor.planner import plan_next
    from api.catalog import resolve_methods, resolve_workloads

    if any(t["kind"] == "pool" for t in targets):
        raise Unprocessable("plan auto chooses cells per hardware class: name hardware_classes or nodes, not pool")
    class_of = {t["name"]: t["name"] for t in targets if t["kind"] == "class"}
    for t in targets:
        if t["kind"] == "node":
            class_of[t["name"]] = session.get_one(Node, t["name"]).hardware_class
    records = list(iter_records(session))  # the whole store trains the learner; the cells are the models'
    if not any(r["model_id"] in models for r in records):
        raise Unprocessable(f"no stored profiles of {', '.join(models)}: profile a grid first (plan: grid)")
    cells = plan_next(
        records,
        n=max_cells,
        models=models,
        hardware_classes=set(class_of.values()),
        methods=method_ids,
        workload_ids=workload_ids,
    )
    items: dict[tuple, dict] = {}
    for cell in cells:
        shape = _shape_of(cell["workload"], cell["workload_id"])
        if shape is None:
            continue
        config = resolve_methods([cell["method_entry"]])[0]["config"]
        for name, hardware_class in class_of.items():
            if hardware_class != cell["hardware_class"]:
                continue
            target = next(t for t in targets if t["name"] == name)
            item = items.setdefault(
                (cell["model"], cell["workload_id"], name),
                {
                    "kind": "profile",
                    "model": cell["model"],
                    "workload": resolve_workloads([shape])[0]["shape"],
                    "methods": [],
                    "target": target,
                    "reps": reps,
                },
            )
            item["methods"].append(config)
    if not items:
        raise Unprocessable("the planner found no unmeasured cell worth profiling for these models and targets")
    return list(items.values())


def _shape_of(row: dict, workload_id: str) -> dict | None:
    """The job shape of a stored workload row, or None where the row does not give it back exactly
    (a kind whose row renames its fields)."""
    from executors.families import get_kind, workload_from_json

    try:
        kind = get_kind(row["kind"])
        names = {f.name for f in dataclasses.fields(kind.workload)}
        flat = {**{k: v for k, v in row.items() if k != "params"}, **(row.get("params") or {})}
        shape = {"kind": row["kind"], **{k: v for k, v in flat.items() if k in names and v is not None}}
        return shape if workload_from_json(shape).id == workload_id else None
    except (KeyError, TypeError, ValueError):
        return None
