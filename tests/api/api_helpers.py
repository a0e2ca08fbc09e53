"""Helpers for the API tests: the embedded broker's real queue contents, planned items, exact records."""

from __future__ import annotations


def broker_messages() -> list[tuple[str, str, int]]:
    """(queue, job id, item index) of every message waiting in the embedded broker (a real SQLite file)."""
    import base64
    import json
    import sqlite3

    from profiles.settings import get_settings

    path = get_settings().data_dir / "broker.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        try:
            rows = conn.execute(
                "SELECT q.name, m.payload FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id WHERE m.visible"
            ).fetchall()
        except sqlite3.OperationalError:  # the transport creates its tables on the first send
            return []
    out = []
    for queue, payload in rows:
        args = json.loads(base64.b64decode(json.loads(payload)["body"]))[0]
        out.append((queue, args[0], args[1]))
    return sorted(out)


def profile_item(target: dict, methods=("baseline", "quant.int8_dynamic"), workload=None) -> dict:
    """An item as the planner makes it, through the same catalogue functions."""
    from api.catalog import resolve_methods, resolve_workloads

    shape = resolve_workloads([workload or {"batch_size": 1, "prompt_len": 8, "gen_len": 4}])[0]["shape"]
    return {
        "kind": "profile",
        "model": "zoo:lm-tiny",
        "workload": shape,
        "methods": [m["config"] for m in resolve_methods(list(methods))],
        "target": target,
        "reps": 5,
    }


def item_record(item: dict, node: dict, config: dict, **overrides) -> dict:
    """A profile record a worker would report for one method of ``item`` (figures made up, ids exact)."""
    from executors.families import workload_from_json
    from profiles.models import run_id_for

    workload = workload_from_json(item["workload"])
    model_id = overrides.pop("model_id", item["model"])
    record = {
        "run_id": run_id_for(model_id, workload.id, config["method"], config, node["id"]),
        "model_id": model_id,
        "workload_id": workload.id,
        "node_id": node["id"],
        "hardware_class": node["hardware_class"],
        "method_id": config["method"],
        "config": config,
        "status": "ok",
        "speedup": 1.0 if config["method"] == "baseline" else 1.4,
        "latency_p50_s": 0.01,
        "repeats": 5,
        "model": {"id": model_id, "family": "decoder-lm", "params": 1234, "layers": 2, "source": model_id},
        "workload": workload.row(),
        "node": node,
    }
    record.update(overrides)
    return record
