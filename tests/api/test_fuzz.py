"""Schemathesis over every operation, stateless and stateful (following the OpenAPI links), with all
of its default checks: no input gives a 5xx, and every answer matches the documented status codes,
media types, headers and schemas. Together the runs make at least 2 000 calls (the last test checks)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from api.app import create_app
from api.auth import create_api_key
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade
from profiles.models import Node, utcnow

# These routes check names against the registry and the store (models, methods, nodes) and shapes
# against the executors: input the schema allows can still name something unknown. Their 422 is
# documented; everywhere else a schema-valid request must be accepted.
SEMANTIC_422 = {
    "operations": [
        {
            "include-path": path,
            "include-method": "POST",
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422"]}},
        }
        for path in (
            "/v1/profiling-jobs",
            "/v1/runs",
            "/v1/recommendations",
            "/v1/models",
            "/v1/jobs/{job_id}/items/{index}/result",
        )
    ]
}
# From the dict, not over HTTP: loading must not start the app (its lifespan opens the store).
APP = create_app()
schema = schemathesis.openapi.from_dict(APP.openapi(), config=schemathesis.Config.from_dict(SEMANTIC_422))
schema.app = APP
CALLS = {"stateless": 0, "stateful": 0}
STATELESS_EXAMPLES = 60  # × 26 operations; hypothesis stops early where a schema has fewer distinct inputs
FUZZ = settings(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,  # every run starts fresh: nothing found once is replayed from a cache the CI lacks
    phases=[Phase.explicit, Phase.generate],
)


def _pool() -> dict:
    """A store with an online node of the zoo's class, so profiling jobs and runs can be planned."""
    upgrade(default_engine())
    with session_scope() as session:
        session.add(Node(id="w1", hardware_class="cpu-fuzz-t1", last_heartbeat=utcnow()))
        key = create_api_key(session, "admin", "fuzz")[1]
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(autouse=True)
def sender():
    """The app's lifespan does not run under the fuzzer's transport; its background sender does here."""
    from api.dispatch import Sender, set_sender

    running = Sender().start()
    set_sender(running)
    yield
    set_sender(None)
    running.stop()


@pytest.fixture
def admin_headers(isolated_data_dir) -> dict:
    return _pool()


def _check_error_shape(response) -> None:
    if response.status_code >= 400:  # every error speaks the one error format
        body = response.json()
        assert set(body) == {"detail", "code"} and isinstance(body["detail"], str), body


@pytest.mark.slow
@schema.parametrize()
@settings(FUZZ, max_examples=STATELESS_EXAMPLES)
def test_every_operation_answers_as_documented(case, admin_headers):
    response = case.call_and_validate(headers=admin_headers)
    CALLS["stateless"] += 1
    _check_error_shape(response)


class Scenarios(schema.as_state_machine()):  # type: ignore[misc]  # a class schemathesis builds at run time
    """Create → read → cancel/revoke/remove sequences, as the links in the OpenAPI describe them."""

    headers: dict = {}

    def setup(self) -> None:
        Scenarios.headers = Scenarios.headers or {}

    def get_call_kwargs(self, case) -> dict:
        return {"headers": self.headers}

    def after_call(self, response, case) -> None:
        super().after_call(response, case)
        CALLS["stateful"] += 1
        _check_error_shape(response)


@pytest.mark.slow
def test_stateful_sequences_answer_as_documented(isolated_data_dir):
    Scenarios.headers = _pool()
    Scenarios.run(settings=settings(FUZZ, max_examples=80, stateful_step_count=10))
    assert CALLS["stateful"] >= 400


@pytest.mark.slow
def test_the_fuzz_made_at_least_2000_calls():
    if CALLS["stateless"] == 0:
        pytest.skip("the stateless fuzz did not run in this session (selected out)")
    assert CALLS["stateless"] + CALLS["stateful"] >= 2000, CALLS
