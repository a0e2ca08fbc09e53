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
    made = {}
    with session_scope() as session:
        for scope in ("admin", "client", "worker"):
            made[scope] = create_api_key(session, scope, name=f"test {scope}")[1]
    return made


@pytest.fixture
def join_token(client) -> str:
    from datetime import timedelta

    with session_scope() as session:
        return create_join_token(session, timedelta(hours=1), max_uses=5, labels={"site": "lab"})[1]
