"""Recommendation answers kept, as the bytes sent, for as long as what they were computed from is
unchanged.

An answer depends on the question, the active advisor version, the model's stored descriptors and
the node table (which nodes are online, and their figures). They are read in one SQL statement,
straight through the driver: SQLAlchemy's execution layer (statement cache keys, events, BEGIN and
result processing) costs several times what the read itself does. A question asked again against
the same state is answered from memory. Anything else in the store changing (a heartbeat, a job)
does not change an answer, so it does not evict one.

On SQLite most requests need not read those rows at all: a connection's ``PRAGMA data_version``
changes when another connection (of this process or another) commits, and this process counts the
commits made through its own engine, which a connection's own data_version misses. While neither
has moved since a pooled connection last read the state, the state it read is still the store's.

An answer not kept is computed in the transaction the state it is kept under is read in, so a change
committed between the two cannot file an answer under a state it was not computed from.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import String, bindparam, cast, event, literal_column, null, select, union_all
from sqlalchemy.engine import Dialect, Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from profiles.db import default_engine, read_scope
from profiles.models import AdvisorVersion, ModelSpec, Node

# Node columns that change without changing any answer: heartbeats and what the node works on.
VOLATILE_NODE_COLUMNS = {"last_heartbeat", "current_item", "last_work_at"}
_ANSWER = TypeAdapter(dict)  # the serialiser FastAPI uses for a route returning a dict
JSON = "application/json"
_SEEN = "accel_answers_state"  # key, in a pooled SQLite connection's info, of the state it last read


def state_query(dialect: Dialect) -> Any:
    """The rows an answer about the model bound as ``model_id`` depends on, as one statement: the active
    version, the model's descriptors and the node table, tagged and in a fixed order.

    SQLite's rows come back as stored (a cast to text would round floats to 15 digits). Other stores
    insist that a union's columns agree in type, so there every value is read as text.
    """
    versions = AdvisorVersion.__table__.c  # type: ignore[attr-defined]
    models = ModelSpec.__table__.c  # type: ignore[attr-defined]
    nodes = Node.__table__.c  # type: ignore[attr-defined]
    parts = [
        ("version", [versions.id, versions.artefact_path], versions.active),
        ("model", list(models), models.id == bindparam("model_id")),
        ("node", [c for c in nodes if c.name not in VOLATILE_NODE_COLUMNS], None),
    ]
    width = max(len(columns) for _, columns, _ in parts)
    as_text = dialect.name != "sqlite"
    selects = []
    for part, columns, where in parts:
        values = [cast(c, String) if as_text else c for c in columns]
        values += [cast(null(), String) if as_text else null()] * (width - len(columns))
        query = select(literal_column(f"'{part}'").label("part"), *(v.label(f"v{i}") for i, v in enumerate(values)))
        selects.append(query if where is None else query.where(where))
    return union_all(*selects).order_by("part", "v0")


def _data_version(connection: Any) -> int:
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA data_version")
        return cursor.fetchone()[0]
    finally:
        cursor.close()


class Answers:
    """A bounded LRU of serialised answers keyed by (question, state of the store it depends on)."""

    def __init__(self, size: int = 512):
        self.size = size
        self._kept: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self._compiled: dict[tuple, tuple[str, Callable[[str], Any]]] = {}  # dialect → SQL, its parameters
        self._commits_seen = 0  # commits through the engine's connections, counted under _lock
        self._watched: weakref.WeakSet[Engine] = weakref.WeakSet()

    def _statement(self, dialect: Dialect) -> tuple[str, Callable[[str], Any]]:
        which = (dialect.name, dialect.driver, dialect.paramstyle)
        found = self._compiled.get(which)
        if found is None:
            compiled = state_query(dialect).compile(dialect=dialect)
            names = compiled.positiontup or []

            def parameters(model_id: str) -> Any:
                given = compiled.construct_params({"model_id": model_id})
                return tuple(given[name] for name in names) if compiled.positional else given

            found = self._compiled[which] = (str(compiled), parameters)
        return found

    def _read(self, dbapi_connection: Any, dialect: Dialect, model_id: str) -> int:
        sql, parameters = self._statement(dialect)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(sql, parameters(model_id))
            return hash(tuple(map(tuple, cursor.fetchall())))
        finally:
            cursor.close()

    def state(self, model_id: str) -> int:
        """A hash of what an answer about ``model_id`` is computed from (one statement, so one snapshot)."""
        engine = default_engine()
        connection = engine.raw_connection()
        try:
            if engine.dialect.name != "sqlite":
                return self._read(connection, engine.dialect, model_id)
            if engine not in self._watched:
                event.listen(engine, "commit", self._count_commit)
                self._watched.add(engine)
            # Both are read before the state: a commit after them moves one of them for the next request.
            version = (self._commits_seen, _data_version(connection))
            seen: tuple[tuple, dict[str, int]] | None = connection.info.get(_SEEN)
            if seen is None or seen[0] != version or len(seen[1]) >= self.size:
                seen = connection.info[_SEEN] = (version, {})
            states = seen[1]  # model id → state, as of that version
            if model_id not in states:
                states[model_id] = self._read(connection, engine.dialect, model_id)
            return states[model_id]
        finally:
            connection.close()  # back to the pool, rolled back

    def _count_commit(self, _connection: Any) -> None:
        """Before every commit through the engine's connections, which their own data_version misses."""
        with self._lock:
            self._commits_seen += 1

    def state_in(self, session: Session, model_id: str) -> int:
        """The same hash, read as the first statement of the session's transaction, which then sees the
        store as it was at that read: SQLite's read transactions do, and elsewhere (PostgreSQL's read
        committed gives each statement a snapshot of its own) the transaction asks for repeatable read.
        """
        dialect = session.get_bind().dialect
        options = {} if dialect.name == "sqlite" else {"isolation_level": "REPEATABLE READ"}
        connection = session.connection(execution_options=options)
        return self._read(connection.connection, dialect, model_id)

    def answer(self, question: str, model_id: str, compute: Callable[[Session], dict]) -> Response:
        """The answer to ``question`` from memory, or ``compute``'s in a read-only session (and kept)."""
        body = self._kept_for((question, self.state(model_id)))
        return Response(self._computed(question, model_id, compute) if body is None else body, media_type=JSON)

    async def respond(self, question: str, model_id: str, compute: Callable[[Session], dict]) -> Response:
        """``answer`` for an async route. On SQLite the state is read on the event loop: a local read,
        which in WAL mode never waits for a writer and costs less than handing the request to a worker
        thread and back; only an answer not kept is computed in one. Elsewhere the read is a round trip
        to a server, so the whole answer is made in a worker thread."""
        if default_engine().dialect.name != "sqlite":
            return await run_in_threadpool(self.answer, question, model_id, compute)
        body = self._kept_for((question, self.state(model_id)))
        if body is None:
            body = await run_in_threadpool(self._computed, question, model_id, compute)
        return Response(body, media_type=JSON)

    def _kept_for(self, key: tuple) -> bytes | None:
        with self._lock:
            body = self._kept.get(key)
            if body is not None:
                self._kept.move_to_end(key)
                self.hits += 1
        return body

    def _computed(self, question: str, model_id: str, compute: Callable[[Session], dict]) -> bytes:
        with read_scope() as session:
            key = (question, self.state_in(session, model_id))  # first: what compute() then reads
            body = _ANSWER.dump_json(compute(session))  # errors propagate and are not kept
        with self._lock:
            self.misses += 1
            self._kept[key] = body
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return body

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


ANSWERS = Answers()
