"""A retrained advisor is activated only if it is not worse on the same folds; admins force and roll back."""

import math

import numpy as np
import pytest
from sqlmodel import select

from advisor.synthetic import synthetic_records
from advisor.versions import active_advisor, compare_versions, keep_comparison, rollback, scores, train_advisor
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade
from profiles.models import AdvisorVersion, run_id_for
from profiles.transfer import add_records, iter_records


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


def test_any_two_versions_compare_on_the_same_folds_as_the_gate_compares_them(store):
    first, _, _ = _train()
    with session_scope() as session:
        add_records(session, enumerate(_noisy_twin(_records(), np.random.default_rng(0)), start=10_000))
    never, active, gate = _train(activate="never")
    assert not active and gate is None  # nothing compared it with anything
    gated, active, gate = _train()  # the same profiles as `never`, gated against `first`
    assert not active and gate["against"] == first
    with session_scope() as session:
        records = list(iter_records(session))
        by_id = {v.id: v for v in session.exec(select(AdvisorVersion))}
        result = compare_versions(records, by_id[first], by_id[never])  # either order: newer against older
        assert (result["newer_id"], result["older_id"]) == (never, first)
        assert result["newer"] == pytest.approx(gate["candidate"]) and result["older"] == pytest.approx(gate["active"])
        assert result["not_worse"] is False and result["n_profiles"] == len(records)
        twins = compare_versions(records, by_id[gated], by_id[never])  # the same snapshot on both sides
        assert twins["newer"] == twins["older"] and twins["not_worse"] is True
        with pytest.raises(ValueError, match="itself"):
            compare_versions(records, by_id[first], by_id[first])
        keep_comparison(session, result)
    with session_scope() as session:
        evaluation = session.get_one(AdvisorVersion, never).evaluation
        assert evaluation["same_folds"][first]["newer"] == result["newer"] and "gate" not in evaluation
