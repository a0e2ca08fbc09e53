"""Background loop in the API: nodes not heard from are marked lost and their items re-queued."""

from __future__ import annotations

import logging
import threading

from api.jobs import requeue_lost
from api.routes.workers import mark_lost_nodes
from executors.celery_app import send_item
from profiles.db import session_scope

log = logging.getLogger(__name__)


def reap_once(lost_after_s: float) -> list[tuple[str, int, str]]:
    with session_scope() as session:
        lost = mark_lost_nodes(session, lost_after_s)
        resend = requeue_lost(session, lost)
    for job_id, index, queue in resend:  # after commit, as for every send
        send_item(job_id, index, queue)
    if lost:
        log.warning("nodes lost: %s; re-queued %d items", ", ".join(lost), len(resend))
    return resend


def start_reaper(lost_after_s: float, every_s: float) -> threading.Event:
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                reap_once(lost_after_s)
            except Exception:  # the loop must outlive a transient DB or broker error
                log.exception("reaper pass failed")

    threading.Thread(target=loop, name="node-reaper", daemon=True).start()
    return stop
