"""Getting items to workers, and getting them there again when a message was lost.

The store is the outbox: an item is queued in the transaction that creates (or re-queues) it,
and a background sender publishes its message after that commit and then stamps the item's
``dispatched_at``. A broker that is down when a job is created therefore delays the job but
never loses it. The reconciler, run at start-up and periodically, repairs what the broker alone
cannot see:

- a queued item never stamped (the API died before sending, or the broker refused) is sent;
- a queued item whose message a worker took and never claimed (the API was down when it
  tried, the worker died holding it, Redis restarted and dropped its queues) is sent again once
  a node that serves its queue has sat idle for ``redispatch_after_s`` since it was sent: an
  idle consumer of that queue would have claimed it had the message still been there;
- an item claimed by a node that has since said, heartbeat after heartbeat, that it is working
  on something else (its worker crashed between claim and report) is re-queued and sent.

Messages can be duplicated this way but never double-counted: a claim is refused for an item
that is running elsewhere or done.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime, timedelta

from sqlmodel import Session

from api.jobs import Send, active_jobs, item_queue, locked_job, online_nodes, parse_time, requeue_item, serves
from executors.celery_app import send_item
from profiles.db import session_scope
from profiles.models import Node, utcnow

log = logging.getLogger(__name__)
UNSENT_GRACE_S = 5.0  # the sender normally stamps an item well within this after its commit


class Sender:
    """A thread that publishes messages after their transaction committed, off the request path."""

    def __init__(self) -> None:
        self._queue: queue.Queue[list[Send] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="item-sender", daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def submit(self, sends: list[Send]) -> None:
        if sends:
            self._queue.put(list(sends))

    def stop(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                publish(batch)
            except Exception:  # the reconciler sends what this could not
                log.exception("sending %d items failed", len(batch))


_sender: Sender | None = None


def set_sender(sender: Sender | None) -> None:
    global _sender
    _sender = sender


def dispatch(sends: list[Send]) -> None:
    """Call after the transaction that queued these items has committed."""
    if _sender is not None:
        _sender.submit(sends)
    else:  # no background sender (a CLI or a test without the app's lifespan): send in place
        publish(sends)


def publish(sends: list[Send]) -> int:
    """Sends each message, then stamps the sent items; returns how many went out."""
    sent: dict[str, list[int]] = {}
    for job_id, index, queue_name in sends:
        try:
            send_item(job_id, index, queue_name)
        except Exception as exc:  # broker down: the items stay unstamped and the reconciler retries
            log.warning("broker refused %s[%d] (%s); will retry", job_id, index, type(exc).__name__)
            break
        sent.setdefault(job_id, []).append(index)
    if sent:
        with session_scope() as session:
            _stamp(session, sent)
    return sum(len(v) for v in sent.values())


def _stamp(session: Session, sent: dict[str, list[int]]) -> None:
    now = utcnow().isoformat()
    for job_id, indices in sent.items():
        job = locked_job(session, job_id)
        items = dict(job.result.get("items", {}))
        for index in indices:
            # "sends" counts messages, so a job shows how often an item had to be sent again.
            items[str(index)] = {
                **items[str(index)],
                "dispatched_at": now,
                "sends": items[str(index)].get("sends", 0) + 1,
            }
        job.result = {**job.result, "items": items}
        session.add(job)


def _idle_since(node: Node, busy: set[str]) -> datetime | None:
    """When the node last did anything, if it does nothing now (else None)."""
    if node.id in busy or node.current_item:
        return None
    return node.last_work_at or node.last_heartbeat


def reconcile(session: Session, redispatch_after_s: float) -> list[Send]:
    """Finds items whose message is missing or whose claim is orphaned; returns what to send."""
    now = utcnow()
    quiet = now - timedelta(seconds=redispatch_after_s)
    unsent_before = now - timedelta(seconds=UNSENT_GRACE_S)
    jobs = active_jobs(session)
    online = online_nodes(session)
    busy = {s["node"] for job in jobs for s in job.result.get("items", {}).values() if s["state"] == "running"}
    idle = [n for n in online if (since := _idle_since(n, busy)) is not None and since < quiet]
    by_id = {n.id: n for n in online}
    sends: list[Send] = []
    for job in jobs:
        for key, state in job.result.get("items", {}).items():
            index, item = int(key), job.spec["items"][int(key)]
            target = item.get("target", {"kind": "pool"})
            if state["state"] == "queued":
                sent = parse_time(state.get("dispatched_at"))
                if sent is None:
                    if (parse_time(state.get("queued_at")) or job.created_at) < unsent_before:
                        sends.append((job.id, index, item_queue(item)))
                elif sent < quiet and any(serves(n, target) for n in idle):
                    sends.append((job.id, index, item_queue(item)))
            elif state["state"] == "running" and _orphaned(state, by_id.get(state["node"]), job.id, index, quiet):
                locked = locked_job(session, job.id)
                sends.append(requeue_item(session, locked, index, requeue_reason="claim orphaned"))
    return sends


def _orphaned(state: dict, node: Node | None, job_id: str, index: int, quiet) -> bool:
    """Claimed, but its node has said for a while (heartbeats after the claim) that it does other things."""
    claimed = parse_time(state.get("claimed_at"))
    if node is None or claimed is None or claimed >= quiet or node.last_heartbeat is None:
        return False
    return node.current_item != f"{job_id}:{index}" and node.last_heartbeat - claimed > (utcnow() - quiet)


def reconcile_once(redispatch_after_s: float) -> int:
    with session_scope() as session:
        sends = reconcile(session, redispatch_after_s)
    if sends:
        log.warning("re-dispatching %d items (unsent, lost by the broker, or orphaned)", len(sends))
        return publish(sends)
    return 0
