"""A run of a named method created over REST keeps the active advisor's prediction for that method —
even one a recommendation would drop below its quality floor — and returns it; where the advisor
cannot predict the method, the run keeps the reason, and its admin page states it."""

from __future__ import annotations

from profiles.db import session_scope
from profiles.models import Job, Node, utcnow

LOSSY = "prune.struct.adapt_pruner"
LOSS = -0.3  # far below the default quality floor (-5 %), so a recommendation drops it


def _advisor_with_a_lossy_method() -> str:
    """An advisor on generated profiles where LOSSY loses 30 % quality; an online node of their class."""
    from advisor.synthetic import synthetic_records
    from advisor.versions import train_advisor
    from profiles.transfer import add_records

    records = [
        {**r, "quality_delta": LOSS} if r["method_id"] == LOSSY and r["status"] == "ok" else r
        for r in synthetic_records(n_models=4, n_workloads=2, n_hardware=1)
    ]
    with session_scope() as session:
        add_records(session, enumerate(records, start=1))
        train_advisor(session, size="small", evaluate_splits=())
        session.add(Node(id="w1", hardware_class=records[0]["hardware_class"], last_heartbeat=utcnow()))
    return records[0]["model_id"]


def test_a_named_method_below_the_quality_floor_keeps_its_prediction_and_the_page_shows_it(client, keys):
    model = _advisor_with_a_lossy_method()
    headers = {"Authorization": f"Bearer {keys['client']}"}
    created = client.post(
        "/v1/runs", json={"model": model, "prompts": ["def f():"], "method": LOSSY, "node": "w1"}, headers=headers
    )
    assert created.status_code == 202, created.text
    run = created.json()
    with session_scope() as session:
        workload = session.get(Job, run["id"]).spec["items"][0]["workload"]
    question = {"model": model, "workload": workload, "node": "w1", "top_k": 50}
    # The recommendation drops it for its predicted loss ...
    default = client.post("/v1/recommendations", json=question, headers=headers).json()
    dropped = [e["reason"] for e in default["excluded"] if e["method_id"] == LOSSY]
    assert dropped and "below the floor" in dropped[0]
    # ... but the run of it, named by the caller, keeps the advisor's figures for it.
    anything = client.post("/v1/recommendations", json={**question, "quality_floor": -1}, headers=headers).json()
    expected = next(c for c in anything["candidates"] if c["method_id"] == LOSSY)
    prediction = run["prediction"]
    assert run["no_prediction"] is None and prediction["advisor_version"] == anything["advisor_version"]
    assert prediction["speedup"] == expected["speedup"]
    assert prediction["speedup_interval"] == expected["speedup_interval"]
    assert prediction["quality_delta"] == expected["quality_delta"] < -0.05
    assert prediction["node_id"] == "w1" and prediction["basis"] == "interpolated"
    assert client.get(f"/v1/runs/{run['id']}", headers=headers).json()["prediction"] == prediction

    client.post("/ui/login", data={"key": keys["admin"]})
    page = client.get(f"/ui/partials/runs/{run['id']}").text
    assert 'id="verdicts"' in page and "no-prediction" not in page
    assert f"{prediction['speedup']:.2f}× ({prediction['speedup_interval'][0]:.2f}–" in page
    assert "−" in page and "waiting for the run" in page  # the predicted loss, before any measurement


def test_a_method_the_advisor_never_saw_keeps_the_reason_and_the_page_states_it(client, keys):
    model = _advisor_with_a_lossy_method()
    headers = {"Authorization": f"Bearer {keys['client']}"}
    body = {"model": model, "prompts": ["def f():"], "method": "quant.weight_only_int4", "node": "w1"}
    created = client.post("/v1/runs", json=body, headers=headers)
    assert created.status_code == 202, created.text
    run = created.json()
    assert run["prediction"] is None
    assert "trained on no profile of quant.weight_only_int4" in run["no_prediction"]

    client.post("/ui/login", data={"key": keys["admin"]})
    page = client.get(f"/ui/partials/runs/{run['id']}").text
    assert 'id="verdicts"' not in page
    assert "No prediction: the active advisor was trained on no profile of quant.weight_only_int4" in page


def test_a_run_without_any_advisor_says_so(client, keys):
    from advisor.synthetic import synthetic_records
    from profiles.transfer import add_records

    records = list(synthetic_records(n_models=1, n_workloads=1, n_hardware=1))
    with session_scope() as session:
        add_records(session, enumerate(records, start=1))  # the model is known, but nothing was trained
    body = {"model": records[0]["model_id"], "prompts": ["x"], "method": "quant.int8_dynamic"}
    created = client.post("/v1/runs", json=body, headers={"Authorization": f"Bearer {keys['client']}"})
    assert created.status_code == 202, created.text
    assert created.json()["prediction"] is None and created.json()["no_prediction"] == "no advisor is trained yet"
