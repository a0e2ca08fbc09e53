"""A bounded fuzz run of the OpenAPI schema (schemathesis): no input may produce a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.app import create_app
from api.auth import create_api_key
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade

# From the dict, not over HTTP: loading must not start the app (its lifespan opens the store).
APP = create_app()
schema = schemathesis.openapi.from_dict(APP.openapi())
schema.app = APP


@pytest.fixture
def admin_headers(isolated_data_dir) -> dict:
    upgrade(default_engine())
    with session_scope() as session:
        key = create_api_key(session, "admin", "fuzz")[1]
    return {"Authorization": f"Bearer {key}"}


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error(case, admin_headers):
    response = case.call(headers=admin_headers)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    )
    if response.status_code >= 400:  # every error speaks the one error format
        body = response.json()
        assert set(body) == {"detail", "code"} and isinstance(body["detail"], str), body
