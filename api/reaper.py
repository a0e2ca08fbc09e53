"""The API's background loop: silent nodes marked lost (their items re-queued), lost messages sent
again (api.dispatch), and the API keys' last-use times written, all off the request path."""

from __future__ import annotations

import logging
import threading

from api.auth import flush_key_use
from api.dispatch import publish, reconcile_once
from api.jobs import Send, requeue_running
from api.routes.workers import mark_lost_nodes
from profiles.db import session_scope
from profiles.settings import Settings

log = logging.getLogger(__name__)


def reap_once(lost_after_s: float) -> list[Send]:
    with session_scope() as session:
        lost = mark_lost_nodes(session, lost_after_s)
        # Every node that is not online, not only those just marked: a lost node may have been
        # marked by a read of the pool (GET /v1/workers) rather than by this loop.
        resend = requeue_running(session, None, reason="node not online")
    publish(resend)  # after commit, as for every send
    if lost or resend:
        log.warning("nodes lost: %s; re-queued %d items", ", ".join(lost) or "none new", len(resend))
    return resend


def background_pass(settings: Settings) -> None:
    reap_once(settings.node_lost_after_s)
    reconcile_once(settings.redispatch_after_s)
    with session_scope() as session:
        flush_key_use(session)


class Background:
    """The running loop; ``stop()`` ends it after its last key-use flush."""

    def __init__(self, stop: threading.Event, thread: threading.Thread):
        self._stop, self._thread = stop, thread

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


def start_background(settings: Settings) -> Background:
    """Runs one pass at once (the start-up reconciliation), then every few seconds until stopped."""
    stop = threading.Event()
    every_s = max(1.0, min(settings.node_lost_after_s, settings.redispatch_after_s) / 4)

    def loop() -> None:
        while True:
            try:
                background_pass(settings)
            except Exception:  # the loop must outlive a transient DB or broker error
                log.exception("background pass failed")
            if stop.wait(every_s):
                break
        with session_scope() as session:  # the last uses before shutdown
            flush_key_use(session)

    thread = threading.Thread(target=loop, name="api-background", daemon=True)
    thread.start()
    return Background(stop, thread)
