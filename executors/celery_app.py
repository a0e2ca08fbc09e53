"""The Celery app shared by the API (which only sends tasks by name) and the workers.

Creating it connects to nothing; the broker is contacted on the first send or when a worker
starts. Tasks carry ids, never objects, and are idempotent (the API decides, per item, whether
a delivery still has work to do), so late acknowledgement plus redelivery is safe.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

from celery import Celery

from profiles.settings import get_settings

log = logging.getLogger(__name__)
EXECUTE_ITEM = "accel.execute_item"
POOL_QUEUE = "pool"


@lru_cache
def celery_app() -> Celery:
    settings = get_settings()
    app = Celery("accel", broker=settings.broker_url, backend=settings.result_backend)
    app.conf.update(
        task_acks_late=True,  # a task killed mid-way is redelivered, not lost
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # one measurement at a time per worker: honest timings
        task_default_queue=POOL_QUEUE,
        task_ignore_result=True,  # results travel through the API, not the result backend
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if settings.broker_url.startswith(("redis", "rediss", "sqs")):
        # Only these transports redeliver unacknowledged messages after a visibility timeout
        # (the SQLAlchemy transport rejects the option); the API's reaper covers the rest.
        app.conf.broker_transport_options = {"visibility_timeout": settings.visibility_timeout_s}
    return app


def send_item(job_id: str, index: int, queue: str, attempts: int = 3) -> None:
    for attempt in range(1, attempts + 1):
        try:
            celery_app().send_task(EXECUTE_ITEM, args=[job_id, index], queue=queue)
            return
        except Exception:
            # The SQLAlchemy transport declares a queue on first publish; a worker declaring the
            # same queue at that moment makes one side fail on the unique queue name. Retrying
            # finds the queue declared.
            if attempt == attempts:
                raise
            log.warning("publishing %s[%d] to %s failed (attempt %d); retrying", job_id, index, queue, attempt)
            time.sleep(0.2 * attempt)
