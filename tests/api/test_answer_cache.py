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
    from api.routes.advise import recommendation
    from api.schemas import RecommendationRequest

    body = RecommendationRequest(**question)
    response = ANSWERS.answer(body.model_dump_json(), body.model, lambda session: recommendation(session, body))
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


@pytest.mark.slow
def test_a_node_figure_changing_evicts_the_answer(advised):
    question = advised
    _ask(question)
    misses = ANSWERS.misses
    with session_scope() as session:  # a re-probe: the node's measured bandwidth moves
        node = session.exec(select(Node).order_by(Node.id)).first()
        assert node is not None
        node.mem_bw_gbs = (node.mem_bw_gbs or 1.0) * 1.5
        session.add(node)
    _ask(question)
    assert ANSWERS.misses == misses + 1


@pytest.mark.slow
def test_an_answer_is_kept_under_the_state_it_was_computed_from(advised):
    """A change committed while an answer is being computed must not file that answer under the state
    read before the change: once the change is undone, the answer served is the one for that state."""
    from api.routes.advise import recommendation
    from api.schemas import RecommendationRequest

    question = advised
    body = RecommendationRequest(**question)
    before = _ask(question)  # no node online: every known node is ranked
    ANSWERS.clear()
    with session_scope() as session:
        first = session.exec(select(Node).order_by(Node.id)).first()
        assert first is not None
        node_id, status = first.id, first.status

    def set_status(value: str) -> None:
        with session_scope() as session:
            node = session.get_one(Node, node_id)
            node.status = value
            session.add(node)

    def compute_while_a_node_comes_online(session) -> dict:
        set_status("online")  # another request commits while this one computes
        return recommendation(session, body)

    ANSWERS.answer(body.model_dump_json(), body.model, compute_while_a_node_comes_online)
    set_status(status)  # back to the state the answer was keyed under when computing began
    assert _ask(question) == before


@pytest.mark.slow
def test_the_route_serves_a_kept_answer_only_while_its_inputs_are_unchanged(advised, client, keys):
    question, headers = advised, {"Authorization": f"Bearer {keys['client']}"}

    def ask() -> dict:
        response = client.post("/v1/recommendations", json=question, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    first = ask()
    hits = ANSWERS.hits
    assert ask() == first and ANSWERS.hits == hits + 1
    with session_scope() as session:  # one node comes online: the pool is now that node alone
        online = session.exec(select(Node).where(Node.id != "w-keys").order_by(Node.id)).first()
        assert online is not None
        online.status, online_id = "online", online.id
        session.add(online)
    assert {c["node_id"] for c in ask()["candidates"]} == {online_id}
    with session_scope() as session:  # another version activated: the route names it at once
        active = session.exec(select(AdvisorVersion).where(AdvisorVersion.active)).one()
        active.active = False
        session.add(active)
        session.add(AdvisorVersion(**{**active.model_dump(), "id": "adv-route-twin", "active": True}))
    assert ask()["advisor_version"] == "adv-route-twin"


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["this process", "another process"])
def test_a_change_committed_through_any_connection_is_seen_by_every_request(advised, writer):
    """On SQLite a pooled connection rereads the state only once a commit has moved its data_version
    (another connection's) or this process's commit count (its own): whichever connection a request
    gets, an answer computed before the change must not be served after it."""
    import sqlite3

    from profiles.db import default_engine

    question = advised
    first = _ask(question)
    for _ in range(3):  # every pooled connection has read the state once
        assert _ask(question) == first
    if writer == "this process":
        with session_scope() as session:
            for node in session.exec(select(Node)):
                node.price_per_hour += 1
                session.add(node)
    else:  # a CLI, or a second API process, writing through a connection of its own
        other = sqlite3.connect(str(default_engine().url.database))
        try:
            other.execute("UPDATE node SET price_per_hour = price_per_hour + 1")
            other.commit()
        finally:
            other.close()
    for _ in range(3):
        assert [c["cost"] for c in _ask(question)["candidates"]] != [c["cost"] for c in first["candidates"]]
