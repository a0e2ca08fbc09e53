"""Jobs and their items: the state machine every profiling job and run goes through.

A job holds a list of items (spec["items"]); each item's state lives in result["items"]:
queued → running (claimed by a node) → done | failed, with attempts counted. A claim is bound
to one node and one attempt: the claim answer carries a claim id, and only the node holding
that claim may report the item (the first report wins; later ones are refused). Messages go
to the broker only after the transaction that created or re-queued the item has committed
(api.dispatch), so a worker never claims an item the store does not have yet.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from sqlmodel import Session, col, select

from api.errors import Conflict, Forbidden, NotFound
from api.reports import checked_records
from profiles.models import Job, Node, utcnow
from profiles.transfer import add_records

FINISHED = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
Send = tuple[str, int, str]  # (job id, item index, queue)


def queue_name(kind: str, name: str) -> str:
    """Celery queue names: `class.<hardware class>` and `node.<node id>`, in a safe alphabet."""
    return f"{kind}.{re.sub(r'[^A-Za-z0-9._-]', '_', name)}"


def item_queue(item: dict) -> str:
    target = item.get("target", {"kind": "pool"})
    return "pool" if target["kind"] == "pool" else queue_name(target["kind"], target["name"])


def target_label(target: dict) -> str:
    return "pool" if target["kind"] == "pool" else f"{target['kind']} {target['name']}"


def serves(node: Node, target: dict) -> bool:
    """Whether this node consumes the queue the item is sent to."""
    if target["kind"] == "class":
        return node.hardware_class == target["name"]
    if target["kind"] == "node":
        return node.id == target["name"]
    return True


def new_job(session: Session, kind: str, items: list[dict], extra: dict | None = None) -> Job:
    job = Job(
        id=f"{kind[:3]}-{secrets.token_hex(8)}",
        kind=kind,
        total=len(items),
        spec={"items": items, **(extra or {})},
        result={"items": {str(i): _queued(0) for i in range(len(items))}},
    )
    if not items:
        job.state, job.finished_at = "succeeded", utcnow()
    session.add(job)
    session.flush()
    return job


def _queued(attempts: int) -> dict:
    """A queued item's state; `queued_at` tells the reconciler how long it has waited to be sent."""
    return {"state": "queued", "node": None, "attempts": attempts, "queued_at": utcnow().isoformat()}


def sends_of(job: Job, indices: list[int] | None = None) -> list[Send]:
    items = job.spec.get("items", [])
    return [(job.id, i, item_queue(items[i])) for i in (range(len(items)) if indices is None else indices)]


def locked_job(session: Session, job_id: str) -> Job:
    """The job row, locked for the transaction (PostgreSQL row lock; SQLite's BEGIN IMMEDIATE)."""
    job = session.exec(select(Job).where(Job.id == job_id).with_for_update()).first()
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def item_state(job: Job, index: int) -> dict:
    state = job.result.get("items", {}).get(str(index))
    if state is None:
        raise NotFound(f"job {job.id} has no item {index}")
    return dict(state)


def save_item(job: Job, index: int, state: dict) -> None:
    items = dict(job.result["items"])
    items[str(index)] = state
    job.result = {**job.result, "items": items}  # a new dict, so the JSON column is marked dirty
    job.done = sum(1 for s in items.values() if s["state"] == "done")
    job.failures = sum(1 for s in items.values() if s["state"] == "failed")
    job.updated_at = utcnow()
    if job.state not in FINISHED and job.done + job.failures == job.total:
        job.state = "failed" if job.done == 0 else "succeeded"
        job.finished_at = utcnow()


def claim_item(session: Session, job_id: str, index: int, node: Node) -> dict:
    job = locked_job(session, job_id)
    state = item_state(job, index)
    item = job.spec["items"][index]
    if not serves(node, item.get("target", {"kind": "pool"})):
        raise Forbidden(f"node {node.id} does not serve {target_label(item['target'])}")
    node.last_work_at = utcnow()
    session.add(node)
    if job.state == "cancelled":
        return {"action": "skip", "reason": "job cancelled"}
    if node.status != "online":
        return {"action": "skip", "reason": f"node {node.id} is {node.status}; join again"}
    if state["state"] in ("done", "failed"):
        return {"action": "skip", "reason": f"item already {state['state']}"}
    holder = session.get(Node, state["node"]) if state["state"] == "running" and state["node"] else None
    if holder is not None and holder.id != node.id and holder.status == "online":
        return {"action": "skip", "reason": f"item is running on {holder.id}"}
    claim = secrets.token_hex(8)
    state.pop("progress", None)  # a new attempt starts from its own first stage
    state.update(
        state="running", node=node.id, claim=claim, attempts=state["attempts"] + 1, claimed_at=utcnow().isoformat()
    )
    save_item(job, index, state)
    if job.state == "queued":
        job.state, job.started_at = "running", utcnow()
    session.add(job)
    return {"action": "run", "claim": claim, "item": item, "attempt": state["attempts"], "kind": job.kind}


def complete_item(
    session: Session,
    job_id: str,
    index: int,
    node: Node,
    claim: str,
    records: list[dict],
    outputs: dict | None,
    error: str | None,
    max_attempts: int,
) -> tuple[dict, bool]:
    """Stores one item's result; returns (answer, requeue?). Only the holder of the claim may report."""
    job = locked_job(session, job_id)
    state = item_state(job, index)
    if job.state == "cancelled":
        return {"accepted": False, "reason": "job cancelled"}, False
    if state["state"] in ("done", "failed"):
        return {"accepted": False, "reason": f"item already {state['state']}"}, False
    if state["state"] != "running" or state["node"] != node.id or state.get("claim") != claim:
        raise Conflict(f"node {node.id} does not hold the claim on item {index} of {job_id}; claim it first")
    node.last_work_at = utcnow()
    session.add(node)
    if error is not None:
        requeue = state["attempts"] < max_attempts
        state.update(state="queued" if requeue else "failed", node=None, claim=None, error=error[-2000:])
        state.update(_queued(state["attempts"]) if requeue else {})
        state.pop("dispatched_at", None)
        save_item(job, index, state)
        session.add(job)
        return {"accepted": True, "requeued": requeue}, requeue
    item = job.spec["items"][index]
    rows = checked_records(session, job, item, node, records, outputs)
    result = add_records(session, enumerate(rows, start=1))
    state.update(
        state="done", node=node.id, claim=None, run_ids=[r["run_id"] for r in rows], finished_at=utcnow().isoformat()
    )
    save_item(job, index, state)
    if outputs is not None:
        job.result = {**job.result, "outputs": outputs, "node": node.id}
    session.add(job)
    return {"accepted": True, "added": result.added, "skipped": result.skipped}, False


def report_progress(
    session: Session,
    job_id: str,
    index: int,
    node: Node,
    claim: str,
    stage: str,
    detail: str | None,
    fraction: float | None,
) -> dict:
    """What a running item is doing now, from the node holding its claim (shown on the job's page)."""
    job = locked_job(session, job_id)
    state = item_state(job, index)
    if job.state == "cancelled":
        return {"accepted": False, "reason": "job cancelled"}
    if state["state"] != "running" or state["node"] != node.id or state.get("claim") != claim:
        raise Conflict(f"node {node.id} does not hold the claim on item {index} of {job_id}")
    set_progress(state, stage, detail, fraction)
    save_item(job, index, state)
    node.last_work_at = utcnow()
    session.add_all((job, node))
    return {"accepted": True}


def set_progress(state: dict, stage: str, detail: str | None = None, fraction: float | None = None) -> None:
    """Stores an item's stage; the stage's start is kept while the stage stays the same (for estimates)."""
    now = utcnow().isoformat()
    previous = state.get("progress") or {}
    started = previous.get("stage_started_at", now) if previous.get("stage") == stage else now
    state["progress"] = {"stage": stage, "detail": detail, "fraction": fraction, "at": now, "stage_started_at": started}


def cancel_job(session: Session, job_id: str) -> Job:
    job = locked_job(session, job_id)
    if job.state in ("succeeded", "failed"):
        raise Conflict(f"job {job_id} already {job.state}")
    job.state, job.finished_at, job.updated_at = "cancelled", utcnow(), utcnow()
    session.add(job)
    return job


def active_jobs(session: Session) -> list[Job]:
    return list(session.exec(select(Job).where(col(Job.state).in_(ACTIVE), Job.kind != "train")))


def requeue_item(session: Session, job: Job, index: int, **why) -> Send:
    """A running item back to queued, for its own queue: it waits for a node that serves its target."""
    state = item_state(job, index)
    state.update(_queued(state["attempts"]), claim=None, **why)
    state.pop("dispatched_at", None)
    save_item(job, index, state)
    session.add(job)
    return (job.id, index, item_queue(job.spec["items"][index]))


def requeue_running(session: Session, node_ids: list[str] | None, reason: str) -> list[Send]:
    """Items running on these nodes (None: on any node that is not online) go back to their queues."""
    if node_ids is not None and not node_ids:
        return []
    online = {n.id for n in online_nodes(session)}
    resend = []
    for job in active_jobs(session):
        for key, state in job.result.get("items", {}).items():
            gone = state["node"] in node_ids if node_ids is not None else state["node"] not in online
            if state["state"] == "running" and gone:
                job = locked_job(session, job.id)
                resend.append(requeue_item(session, job, int(key), requeued_from=state["node"], requeue_reason=reason))
    return resend


def fail_items_for_node(session: Session, node_id: str, reason: str) -> int:
    """Queued items addressed to this node alone can never run once it is removed."""
    failed = 0
    for job in active_jobs(session):
        for key, state in job.result.get("items", {}).items():
            target = job.spec["items"][int(key)].get("target", {})
            if state["state"] == "queued" and target == {"kind": "node", "name": node_id}:
                job = locked_job(session, job.id)
                save_item(job, int(key), {**state, "state": "failed", "error": reason})
                session.add(job)
                failed += 1
    return failed


def waiting_targets(jobs: list[Job], online: list[Node]) -> dict[str, dict[str, int]]:
    """job id → {target label: queued items} for targets no online node serves."""
    waiting: dict[str, dict[str, int]] = {}
    for job in jobs:
        if job.state not in ACTIVE:
            continue
        for key, state in job.result.get("items", {}).items():
            target = job.spec["items"][int(key)].get("target", {"kind": "pool"})
            if state["state"] == "queued" and not any(serves(n, target) for n in online):
                counts = waiting.setdefault(job.id, {})
                counts[target_label(target)] = counts.get(target_label(target), 0) + 1
    return waiting


def online_nodes(session: Session) -> list[Node]:
    return list(session.exec(select(Node).where(Node.status == "online")))


def job_public(job: Job, session: Session | None = None) -> dict:
    """The job as clients see it; with a session, also which targets its queued items wait for."""
    items = job.result.get("items", {})
    waiting = waiting_targets([job], online_nodes(session)).get(job.id, {}) if session is not None else {}
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
        "waiting_for": sorted(waiting),
    }


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
