"""Engine and session helpers: SQLite (WAL, busy timeout) by default, PostgreSQL by URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from profiles.settings import get_settings

READ_ONLY = "accel_read_only"  # execution option of the connections behind read_scope()


def make_engine(url: str, busy_timeout_ms: int = 30_000) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            # WAL lets the API read while a worker writes; the busy timeout makes a second
            # writer wait instead of failing with "database is locked".
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
            dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" hook below issues BEGIN

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(conn) -> None:
            # pysqlite starts transactions lazily as DEFERRED; a read that later upgrades to a
            # write can then fail at once under contention. BEGIN IMMEDIATE waits on the lock.
            # Read-only sessions never upgrade, so they take no lock and never queue behind a writer.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


@lru_cache
def default_engine() -> Engine:
    settings = get_settings()
    settings.ensure_dirs()
    return make_engine(settings.database_url, settings.sqlite_busy_timeout_ms)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: committed on success, rolled back (nothing written) on any error."""
    with Session(engine or default_engine()) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A transaction that only reads: on SQLite a plain (deferred) BEGIN that takes no write lock.

    Anything staged in it is an error (it would be lost, or fail on a lock it never waited for).
    """
    with Session((engine or default_engine()).execution_options(**{READ_ONLY: True})) as session:

        @event.listens_for(session, "before_flush")
        def _refuse_writes(flushing: Session, _context, _instances) -> None:
            if flushing.new or flushing.dirty or flushing.deleted:
                raise RuntimeError("a read-only session was asked to write")

        try:
            yield session
        finally:
            session.rollback()
