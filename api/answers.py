"""Recommendation answers kept, as the bytes sent, for as long as what they were computed from is
unchanged.

An answer depends on the question, the active advisor version, the model's stored descriptors and
the node table (which nodes are online, and their figures). Each request reads those three with
plain SQL — a fraction of what loading them as ORM objects costs — and a question asked again
against the same state is answered from memory. Anything else in the store changing (a heartbeat,
a job) does not change an answer, so it does not evict one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import JSON, String, cast, select
from starlette.responses import Response

from profiles.db import READ_ONLY, default_engine
from profiles.models import AdvisorVersion, ModelSpec, Node

# Node columns that change without changing any answer: heartbeats and what the node works on.
VOLATILE_NODE_COLUMNS = {"last_heartbeat", "current_item", "last_work_at"}
_ANSWER = TypeAdapter(dict)  # the serialiser FastAPI uses for a route returning a dict


def _as_text(column: Any) -> Any:
    """A JSON column read as its stored text: hashable as it is, and not parsed on every request."""
    return cast(column, String).label(column.name) if isinstance(column.type, JSON) else column


class Answers:
    """A bounded LRU of serialised answers keyed by (question, state of the store it depends on)."""

    def __init__(self, size: int = 512):
        self.size = size
        self._kept: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        nodes = Node.__table__.c  # type: ignore[attr-defined]
        self._nodes = select(*[_as_text(c) for c in nodes if c.name not in VOLATILE_NODE_COLUMNS]).order_by(nodes.id)
        versions = AdvisorVersion.__table__.c  # type: ignore[attr-defined]
        self._version = select(versions.id, versions.artefact_path).where(versions.active)
        self._models = ModelSpec.__table__  # type: ignore[attr-defined]
        self._model = select(*map(_as_text, self._models.c))

    def state(self, model_id: str) -> tuple:
        """What an answer about ``model_id`` is computed from, as plain hashable rows (one read transaction)."""
        engine = default_engine().execution_options(**{READ_ONLY: True})
        with engine.connect() as conn:
            version = tuple(conn.execute(self._version).all())
            model = conn.execute(self._model.where(self._models.c.id == model_id)).first()
            nodes = conn.execute(self._nodes).all()
        return version, tuple(model) if model else None, tuple(map(tuple, nodes))

    def answer(self, question: str, model_id: str, compute: Callable[[], dict]) -> Response:
        key = (question, hash(self.state(model_id)))
        with self._lock:
            body = self._kept.get(key)
            if body is not None:
                self._kept.move_to_end(key)
                self.hits += 1
        if body is None:
            body = _ANSWER.dump_json(compute())  # errors propagate and are not kept
            with self._lock:
                self.misses += 1
                self._kept[key] = body
                while len(self._kept) > self.size:
                    self._kept.popitem(last=False)
        return Response(body, media_type="application/json")

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


ANSWERS = Answers()
