"""The closed loop with real processes: advice for a task, a measured run of it, a retrain, advice again.

The API and one worker run as subprocesses on the embedded SQLite broker. The store starts with
one task of the shipped grid (so `serve` imports nothing more and trains in seconds); a profiling
job measures the tiny zoo LM on two shapes; the advisor is trained; the client asks about a third
shape (interpolated), runs int8 on exactly that shape with `measure: true`, retrains, and asks
again: the answer for int8 there is now the measurement.
"""

from __future__ import annotations

import httpx
import pytest
from e2e_stack import credentials, make_stack, wait_for

from api.embedded import shipped_profiles
from profiles.db import session_scope
from profiles.transfer import add_records, read_records

MODEL = "zoo:lm-tiny"
METHOD = "quant.int8_dynamic"
PROMPT = "def main():\n    return 1\n"  # 25 bytes: the byte-level tiny LM sees a 25-token prompt


def _call(stack, method, path, headers, body=None):
    response = httpx.request(method, stack.url + path, headers=headers, json=body, timeout=60)
    assert response.status_code in (200, 201, 202), response.text
    return response.json()


def _finished(stack, path, headers):
    job = _call(stack, "GET", path, headers)
    return job if job["state"] in ("succeeded", "failed", "cancelled") else None


def _train(stack, admin, client):
    job = _call(stack, "POST", "/v1/advisor/train?force=true", admin, {})
    done = wait_for(lambda: _finished(stack, f"/v1/jobs/{job['id']}", client), 300, "training", every=0.5)
    assert done["state"] == "succeeded", done


def _advice(stack, client, shape):
    answer = _call(
        stack, "POST", "/v1/recommendations", client, {"model": MODEL, "workload": shape, "quality_floor": -1}
    )
    return answer, {c["method_id"]: c for c in answer["candidates"]}


def _one_shipped_task() -> list[dict]:
    shipped = shipped_profiles()
    assert shipped is not None, "the seed grid ships with the package"
    records = [r for _, r in read_records(shipped)]
    first = records[0]
    return [r for r in records if (r["model_id"], r["workload_id"]) == (first["model_id"], first["workload_id"])]


@pytest.mark.slow
def test_a_measured_run_moves_the_next_answer_to_the_measurement(tmp_path, zoo_cache, monkeypatch):
    stack = make_stack(tmp_path, zoo_cache, None, monkeypatch)
    with session_scope() as session:
        add_records(session, enumerate(_one_shipped_task(), start=1))
    headers, token = credentials()
    admin, client = headers["admin"], headers["client"]
    try:
        stack.start_api()
        stack.start_worker("w1", 1, token)
        wait_for(lambda: any(n["status"] == "online" for n in _call(stack, "GET", "/v1/workers", admin)), 120, "w1")
        shapes = [{"batch_size": 1, "prompt_len": 16, "gen_len": g} for g in (4, 12)]
        job = _call(
            stack,
            "POST",
            "/v1/profiling-jobs",
            client,
            {"models": [MODEL], "methods": ["baseline", METHOD], "workloads": shapes},
        )
        done = wait_for(
            lambda: _finished(stack, f"/v1/profiling-jobs/{job['id']}", client), 300, "profiling", every=0.5
        )
        assert done["state"] == "succeeded", done
        _train(stack, admin, client)

        asked = {"batch_size": 1, "prompt_len": len(PROMPT.encode()), "gen_len": 8, "sampling": "greedy"}
        before, by_method = _advice(stack, client, asked)
        assert METHOD in by_method, before["excluded"]
        assert by_method[METHOD]["basis"] == "interpolated"
        run = _call(
            stack,
            "POST",
            "/v1/runs",
            client,
            {"model": MODEL, "prompts": [PROMPT], "method": METHOD, "max_new_tokens": 8, "measure": True},
        )
        wait_for(lambda: _finished(stack, f"/v1/runs/{run['id']}", client), 180, "the measured run", every=0.5)
        result = _call(stack, "GET", f"/v1/runs/{run['id']}", client)
        assert result["state"] == "succeeded", result
        (measured,) = [f for f in result["figures"] if f["method_id"] == METHOD]

        _train(stack, admin, client)
        after, by_method = _advice(stack, client, asked)
        assert after["advisor_version"] != before["advisor_version"]
        assert METHOD in by_method, after["excluded"]
        answer = by_method[METHOD]
        assert answer["basis"] == "measured"
        assert answer["speedup"] == pytest.approx(measured["speedup"])
        assert answer["speedup_interval"][0] <= measured["speedup"] <= answer["speedup_interval"][1]
    except AssertionError:
        print({name: stack.log(name) for name in stack.procs})
        raise
    finally:
        stack.stop()
