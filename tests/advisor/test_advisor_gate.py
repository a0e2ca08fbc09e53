"""A retrained advisor is activated only if it is not worse on the same folds; admins force and roll back."""

import math

import numpy as np
import pytest
from sqlmodel import select

from advisor.synthetic import synthetic_records
from advisor.versions import active_advisor, rollback, scores, train_advisor
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade
from profiles.models import AdvisorVersion, run_id_for
from profiles.transfer import add_records


def _records():
    return list(synthetic_records(n_models=8, n_workloads=3, n_hardware=2, seed=5))


def _noisy_twin(records, rng):
    """A new model with the very features of an existing one, whose measurements are noise."""
    twin_of = records[0]["model"]
    out = []
    for r in records:
        if r["model_id"] != twin_of["id"] or r["status"] != "ok":
            continue
        model = twin_of | {"id": "noisy-twin"}
        speedup = math.exp(rng.normal(0, 1.5))
        run_id = run_id_for(model["id"], r["workload_id"], r["method_id"], r["config"], r["node_id"])
        out.append(r | {"run_id": run_id, "model_id": model["id"], "model": model, "speedup": speedup})
    return out


def _train(activate="if-not-worse"):
    with session_scope() as session:
        version = train_advisor(session, size="small", evaluate_splits=(), activate=activate)
        return version.id, version.active, version.evaluation.get("gate")


@pytest.fixture
def store():
    upgrade(default_engine())
    with session_scope() as session:
        add_records(session, enumerate(_records(), start=1))


def test_a_worse_retrain_is_kept_inactive_until_forced_and_rollback_returns(store):
    first, active, gate = _train()
    assert active and gate is None  # nothing to compare with: the first version is activated
    same, active, gate = _train()
    assert active and gate["not_worse"] and gate["candidate"]["mean_regret"] == gate["active"]["mean_regret"]
    with session_scope() as session:
        add_records(session, enumerate(_noisy_twin(_records(), np.random.default_rng(0)), start=10_000))
    worse, active, gate = _train()
    assert not active and not gate["not_worse"] and gate["against"] == same
    assert gate["candidate"]["mean_regret"] > gate["active"]["mean_regret"]
    with session_scope() as session:
        assert active_advisor(session)[0].id == same
        assert scores(session.get_one(AdvisorVersion, worse))["gate"]["not_worse"] is False
    forced, active, gate = _train(activate="force")
    assert active and not gate["not_worse"]
    with session_scope() as session:
        assert rollback(session).id == same
    with session_scope() as session:
        assert active_advisor(session)[0].id == same
        assert [v.id for v in session.exec(select(AdvisorVersion).where(AdvisorVersion.active))] == [same]
