"""An API on a migrated, isolated SQLite store, and keys of every scope."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_api_key, create_join_token
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade


@pytest.fixture
def client(isolated_data_dir):
    upgrade(default_engine())
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def keys(client) -> dict[str, str]:
    """Plaintext keys by scope."""
    from profiles.models import Node, utcnow

    made = {}
    with session_scope() as session:
        # A worker key is bound to its node (joining makes both); a worker key without one may not act.
        session.add(Node(id="w-keys", hardware_class="cpu-keys-t1", status="left", last_heartbeat=utcnow()))
        for scope in ("admin", "client", "worker"):
            node_id = "w-keys" if scope == "worker" else None
            made[scope] = create_api_key(session, scope, name=f"test {scope}", node_id=node_id)[1]
    return made


@pytest.fixture
def join_token(client) -> str:
    from datetime import timedelta

    with session_scope() as session:
        return create_join_token(session, timedelta(hours=1), max_uses=5, labels={"site": "lab"})[1]


@pytest.fixture(autouse=True)
def fresh_broker_app():
    """The Celery app is cached per process; each test's data dir has its own broker file."""
    from executors.celery_app import celery_app

    celery_app.cache_clear()
    yield
    celery_app.cache_clear()
