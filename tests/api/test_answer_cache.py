"""Repeated questions are answered from memory, and only while what the answer depends on is unchanged:
the active advisor version, the model's descriptors and the node table (a heartbeat does not count)."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from api.answers import ANSWERS
from api.errors import ApiError
from profiles.db import session_scope
from profiles.models import AdvisorVersion, ModelSpec, Node, utcnow


@pytest.fixture
def advised(client) -> dict:
    """A store with a small synthetic grid and an advisor trained on it; a question about one of its models."""
    from advisor.api import train_advisor
    from advisor.synthetic import synthetic_records
    from profiles.transfer import add_records, iter_records

    with session_scope() as session:
        add_records(session, enumerate(synthetic_records(n_models=4, n_workloads=3, n_hardware=2), start=1))
        train_advisor(session, evaluate_splits=())
        record = next(iter_records(session))
    question = {
        "model": record["model_id"],
        "workload": {k: record["workload"][k] for k in ("batch_size", "prompt_len", "gen_len")},
    }
    ANSWERS.clear()
    return question


def _ask(question: dict) -> dict:
    """The cache's answer to a question, computed as the recommendations route computes it."""
    from api.routes.advise import recommend_for
    from api.schemas import RecommendationRequest
    from profiles.db import read_scope

    body = RecommendationRequest(**question)

    def compute() -> dict:
        with read_scope() as session:
            return recommend_for(
                session,
                body.model,
                body.workload,
                body.node,
                body.hardware_class,
                body.objective,
                body.quality_floor,
                body.budget,
                body.top_k,
            )

    response = ANSWERS.answer(body.model_dump_json(), body.model, compute)
    assert response.media_type == "application/json"
    return json.loads(bytes(response.body))


@pytest.mark.slow
def test_a_repeated_question_is_served_from_memory_until_its_inputs_change(advised):
    question = advised
    first = _ask(question)
    hits = ANSWERS.hits
    assert _ask(question) == first and ANSWERS.hits == hits + 1

    with session_scope() as session:  # a heartbeat: no answer depends on it
        for node in session.exec(select(Node)):
            node.last_heartbeat, node.current_item = utcnow(), "job:0"
            session.add(node)
    assert _ask(question) == first and ANSWERS.hits == hits + 2

    with session_scope() as session:  # one node comes online: the pool is now that node alone
        online = session.exec(select(Node).order_by(Node.id)).first()
        assert online is not None
        online.status, online_id = "online", online.id
        session.add(online)
    pool = _ask(question)
    assert {c["node_id"] for c in pool["candidates"]} == {online_id}, pool["candidates"]
    assert {c["node_status"] for c in pool["candidates"]} == {"online"}

    with session_scope() as session:  # another version activated: answers name it at once
        active = session.exec(select(AdvisorVersion).where(AdvisorVersion.active)).one()
        active.active = False
        session.add(active)
        twin = AdvisorVersion(**{**active.model_dump(), "id": "adv-twin", "active": True})
        session.add(twin)
    assert _ask(question)["advisor_version"] == "adv-twin"

    kept = _ask(question)
    misses = ANSWERS.misses
    with session_scope() as session:  # the model's descriptors change: the answer is computed again
        model = session.get_one(ModelSpec, question["model"])
        model.params = model.params * 2 + 1
        session.add(model)
    _ask(question)
    assert ANSWERS.misses == misses + 1
    assert _ask(question) is not None and ANSWERS.misses == misses + 1  # and kept again
    assert kept["advisor_version"] == "adv-twin"


def test_errors_are_not_kept(client):
    question = {"model": "zoo:lm-tiny", "workload": {"batch_size": 1, "prompt_len": 8, "gen_len": 8}}
    for _ in range(2):  # no advisor yet: the same 409 each time, computed each time
        misses = ANSWERS.misses
        with pytest.raises(ApiError):
            _ask(question)
        assert ANSWERS.misses == misses
