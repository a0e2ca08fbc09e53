"""Jobs and their items: the state machine every profiling job and run goes through.

A job holds a list of items (spec["items"]); each item's state lives in result["items"]:
queued → running (claimed by a node) → done | failed, with attempts counted. Workers claim an
item before working and report once after; the first report wins and later ones are refused,
so a redelivered task or a node that comes back from the dead never stores a second copy.
Celery messages are sent only after the transaction that created or re-queued the item has
committed, so a worker never claims an item the store does not have yet.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from sqlmodel import Session, select

from api.errors import Conflict, Forbidden, NotFound
from profiles.models import Job, Node, utcnow
from profiles.transfer import add_records

FINISHED = ("succeeded", "failed", "cancelled")
Dispatch = Callable[[str, int, str], None]  # (job id, item index, queue)


def new_job(session: Session, kind: str, items: list[dict], extra: dict | None = None) -> Job:
    job = Job(
        id=f"{kind[:3]}-{secrets.token_hex(8)}",
        kind=kind,
        total=len(items),
        spec={"items": items, **(extra or {})},
        result={"items": {str(i): {"state": "queued", "node": None, "attempts": 0} for i in range(len(items))}},
    )
    if not items:
        job.state, job.finished_at = "succeeded", utcnow()
    session.add(job)
    session.flush()
    return job


def locked_job(session: Session, job_id: str) -> Job:
    """The job row, locked for the transaction (PostgreSQL row lock; SQLite's BEGIN IMMEDIATE)."""
    job = session.exec(select(Job).where(Job.id == job_id).with_for_update()).first()
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def _item_state(job: Job, index: int) -> dict:
    state = job.result.get("items", {}).get(str(index))
    if state is None:
        raise NotFound(f"job {job.id} has no item {index}")
    return dict(state)


def _save_item(job: Job, index: int, state: dict) -> None:
    items = dict(job.result["items"])
    items[str(index)] = state
    job.result = {**job.result, "items": items}  # a new dict, so the JSON column is marked dirty
    job.done = sum(1 for s in items.values() if s["state"] == "done")
    job.failures = sum(1 for s in items.values() if s["state"] == "failed")
    job.updated_at = utcnow()
    if job.state not in FINISHED and job.done + job.failures == job.total:
        job.state = "failed" if job.done == 0 else "succeeded"
        job.finished_at = utcnow()


def claim_item(session: Session, job_id: str, index: int, node_id: str) -> dict:
    job = locked_job(session, job_id)
    state = _item_state(job, index)
    if job.state == "cancelled":
        return {"action": "skip", "reason": "job cancelled"}
    if state["state"] in ("done", "failed"):
        return {"action": "skip", "reason": f"item already {state['state']}"}
    holder = session.get(Node, state["node"]) if state["state"] == "running" and state["node"] else None
    if holder is not None and holder.id != node_id and holder.status == "online":
        return {"action": "skip", "reason": f"item is running on {holder.id}"}
    state.update(state="running", node=node_id, attempts=state["attempts"] + 1, claimed_at=utcnow().isoformat())
    _save_item(job, index, state)
    if job.state == "queued":
        job.state, job.started_at = "running", utcnow()
    session.add(job)
    return {"action": "run", "item": job.spec["items"][index], "attempt": state["attempts"], "kind": job.kind}


def complete_item(
    session: Session,
    job_id: str,
    index: int,
    node_id: str,
    records: list[dict],
    outputs: dict | None,
    error: str | None,
    max_attempts: int,
) -> tuple[dict, bool]:
    """Stores one item's result; returns (answer, requeue?). The first report wins."""
    job = locked_job(session, job_id)
    state = _item_state(job, index)
    if state["state"] in ("done", "failed") or job.state == "cancelled":
        return {
            "accepted": False,
            "reason": f"item already {state['state']}" if job.state != "cancelled" else "job cancelled",
        }, False
    for row, record in enumerate(records, start=1):
        if record.get("node_id") != node_id or (record.get("node") or {}).get("id") != node_id:
            raise Forbidden(f"record {row} claims node {record.get('node_id')!r}; this worker is {node_id!r}")
    if error is not None:
        requeue = state["attempts"] < max_attempts
        state.update(state="queued" if requeue else "failed", node=None, error=error[-2000:])
        _save_item(job, index, state)
        session.add(job)
        return {"accepted": True, "requeued": requeue}, requeue
    for record in records:
        record.setdefault("job_id", job_id)
    result = add_records(session, enumerate(records, start=1))
    state.update(state="done", node=node_id, run_ids=[r["run_id"] for r in records], finished_at=utcnow().isoformat())
    _save_item(job, index, state)
    if outputs is not None:
        job.result = {**job.result, "outputs": outputs, "node": node_id}
    session.add(job)
    return {"accepted": True, "added": result.added, "skipped": result.skipped}, False


def cancel_job(session: Session, job_id: str) -> Job:
    job = locked_job(session, job_id)
    if job.state in ("succeeded", "failed"):
        raise Conflict(f"job {job_id} already {job.state}")
    job.state, job.finished_at, job.updated_at = "cancelled", utcnow(), utcnow()
    session.add(job)
    return job


def requeue_lost(session: Session, lost_node_ids: list[str]) -> list[tuple[str, int, str]]:
    """Items running on lost nodes go back to the queue; returns (job, index, queue) to send."""
    if not lost_node_ids:
        return []
    resend = []
    for job in session.exec(select(Job).where(Job.state.in_(("queued", "running")))):
        for key, state in job.result.get("items", {}).items():
            if state["state"] == "running" and state["node"] in lost_node_ids:
                job = locked_job(session, job.id)
                _save_item(job, int(key), {**state, "state": "queued", "node": None, "lost_node": state["node"]})
                session.add(job)
                resend.append((job.id, int(key), requeue_queue(session, job.spec["items"][int(key)])))
    return resend


def requeue_queue(session: Session, item: dict) -> str:
    """The item's own queue while a node can serve it; else the shared pool, so the job finishes."""
    from api.routes.workers import queue_name

    target = item.get("target", {"kind": "pool"})
    if target["kind"] == "class":
        alive = session.exec(select(Node).where(Node.hardware_class == target["name"], Node.status == "online")).first()
        if alive is not None:
            return queue_name("class", target["name"])
    if target["kind"] == "node":
        node = session.get(Node, target["name"])
        if node is not None and node.status == "online":
            return queue_name("node", target["name"])
    return "pool"


def job_public(job: Job) -> dict:
    items = job.result.get("items", {})
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "done": job.done,
        "total": job.total,
        "failures": job.failures,
        "attempts": sum(s["attempts"] for s in items.values()),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "running_on": sorted({s["node"] for s in items.values() if s["state"] == "running" and s["node"]}),
        "errors": [s["error"] for s in items.values() if s.get("error")][:5],
    }
