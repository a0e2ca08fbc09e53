"""Schemathesis over every operation, stateless and stateful (following the OpenAPI links), with all
of its default checks: no input gives a 5xx, and every answer matches the documented status codes,
media types, headers and schemas. Together the runs make at least 2 000 calls (the last test checks)."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from api.app import create_app
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade
from profiles.models import ApiKey, Node, utcnow
from profiles.settings import get_settings

# One admin key for the whole module, stored afresh in each test's store: schemathesis must know
# the credential that satisfies the schema's security scheme, or it counts a request that lacks
# the header (and gets it added) as "invalid data accepted".
KEY_ID, KEY_SECRET = secrets.token_hex(8), secrets.token_urlsafe(32).replace("_", "-")
ADMIN_KEY = f"ak_{KEY_ID}_{KEY_SECRET}"

# These routes check names against the registry and the store (models, methods, nodes) and shapes
# against the executors: input the schema allows can still name something unknown. Their 422 is
# documented; everywhere else a schema-valid request must be accepted.
CONFIG = {
    "auth": {"openapi": {"apiKey": {"bearer": ADMIN_KEY}}},
    "request-timeout": 60,  # a real store on a busy 2-core machine: correctness here, speed in bench/
    "operations": [
        {
            "include-path": path,
            "include-method": "POST",
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422"]}},
            # The coverage phase walks every method config's knobs to their bounds (~9 000 calls, two
            # minutes on CI): once, through the profiling jobs, covers the MethodEntry schema runs share.
            **({"phases": {"coverage": {"enabled": False}}} if path == "/v1/runs" else {}),
        }
        for path in (
            "/v1/profiling-jobs",
            "/v1/runs",
            "/v1/recommendations",
            "/v1/models",
            "/v1/models/upload",  # file names and contents are checked as a checkpoint's
            "/v1/models/{model_id}/profile",
            "/v1/jobs/{job_id}/items/{index}/result",
        )
    ],
}
# From the dict, not over HTTP: loading must not start the app (its lifespan opens the store).
APP = create_app()
schema = schemathesis.openapi.from_dict(APP.openapi(), config=schemathesis.Config.from_dict(CONFIG))
schema.app = APP
CALLS = {"stateless": 0, "stateful": 0}
STATELESS_EXAMPLES = 60  # × 26 operations; hypothesis stops early where a schema has fewer distinct inputs
FUZZ = settings(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,  # every run starts fresh: nothing found once is replayed from a cache the CI lacks
    phases=[Phase.explicit, Phase.generate],
)


def _pool() -> None:
    """A store with the fuzz's admin key and an online node, so profiling jobs and runs can be planned."""
    import advisor.api  # noqa: F401  (the learner, the registry and torch load once, not inside a request)
    import executors.families  # noqa: F401
    import executors.methods  # noqa: F401

    upgrade(default_engine())
    with session_scope() as session:
        session.add(Node(id="w1", hardware_class="cpu-fuzz-t1", last_heartbeat=utcnow()))
        key_hash = hashlib.sha256(KEY_SECRET.encode()).hexdigest()
        session.add(ApiKey(id=KEY_ID, name="fuzz", scope="admin", key_hash=key_hash))


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
def store(isolated_data_dir) -> None:
    _pool()


def _check_error_shape(response) -> None:
    if response.status_code >= 400:  # every error speaks the one error format
        body = response.json()
        assert set(body) == {"detail", "code"} and isinstance(body["detail"], str), body


@pytest.mark.slow
@schema.parametrize()
@settings(FUZZ, max_examples=STATELESS_EXAMPLES)
def test_every_operation_answers_as_documented(case, store):
    response = case.call_and_validate()
    CALLS["stateless"] += 1
    _check_error_shape(response)


class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
    """Create → read → cancel/revoke/remove sequences, as the links in the OpenAPI describe them."""

    stores: str | None = None  # the folder each scenario's store is made in (set by the test)

    def setup(self) -> None:
        """Each scenario on a store of its own: hypothesis replays a scenario to confirm and shrink
        it, and a store that kept the first run's writes answers the replay differently (a name
        taken, a job already cancelled), so the next step would draw different data."""
        os.environ["ACCEL_DATA_DIR"] = tempfile.mkdtemp(prefix="scenario-", dir=self.stores)
        get_settings.cache_clear()
        default_engine.cache_clear()
        _pool()

    def after_call(self, response, case) -> None:
        super().after_call(response, case)
        CALLS["stateful"] += 1
        _check_error_shape(response)


@pytest.mark.slow
def test_stateful_sequences_answer_as_documented(isolated_data_dir):
    Scenarios.stores = str(isolated_data_dir.parent)  # under the test's tmp dir (its env is restored after)
    Scenarios.run(settings=settings(FUZZ, max_examples=40, stateful_step_count=10))
    assert CALLS["stateful"] >= 200


@pytest.mark.slow
def test_the_fuzz_made_at_least_2000_calls():
    if CALLS["stateless"] == 0:
        pytest.skip("the stateless fuzz did not run in this session (selected out)")
    logging.getLogger(__name__).info("schemathesis calls: %s", CALLS)  # shown with -o log_cli=true
    assert CALLS["stateless"] + CALLS["stateful"] >= 2000, CALLS
