"""What the pages show, read from the store: the dashboard, jobs and their items, runs beside
their prediction, the catalogue crossed with the registry. Reads only; every change goes through
the REST routes' own functions (see actions.py)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from sqlmodel import Session, col, func, select

from api.jobs import FINISHED, job_public
from api.model_profiling import has_weights
from api.routes.workers import mark_lost_nodes
from api.ui.advisor_views import active_score, training_status
from api.ui.words import workload_words
from profiles.models import AdvisorVersion, Job, Method, ModelSpec, Node, ProfileRun, utcnow
from profiles.settings import get_settings

CATALOGUE = Path(__file__).with_name("static") / "catalogue.json"
KIND_WORDS = {"profiling": "profiling grid", "run": "run", "train": "advisor training"}


@lru_cache
def catalogue() -> list[dict]:
    return json.loads(CATALOGUE.read_text())


def _time(value: str | datetime | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _seconds_between(start, end) -> float | None:
    start, end = _time(start), _time(end)
    return (end - start).total_seconds() if start and end else None


def progress_of(state: dict, job: Job) -> dict | None:
    """What an unfinished item is doing: its stage, the time so far, and an estimate where the
    reporter gave a fraction of the stage done (elapsed in the stage × the share still to do)."""
    if job.state in FINISHED or state.get("state") in ("done", "failed"):
        return None
    now, report = utcnow(), state.get("progress")
    if report is None:
        if state.get("state") == "queued":
            return {
                "stage": "queued",
                "detail": None,
                "elapsed_s": _seconds_between(job.created_at, now),
                "eta_s": None,
            }
        report = {"stage": "claimed, starting"}
    fraction = report.get("fraction")
    in_stage = _seconds_between(report.get("stage_started_at"), now)
    eta = in_stage * (1 - fraction) / fraction if fraction and in_stage is not None and 0 < fraction < 1 else None
    return {
        "stage": report["stage"],
        "detail": report.get("detail"),
        "elapsed_s": _seconds_between(state.get("claimed_at") or job.started_at, now),
        "eta_s": eta,
    }


def job_label(job: Job) -> str:
    if job.kind == "profiling":
        request = job.spec.get("request", {})
        models, methods = request.get("models", []), request.get("methods", [])
        return f"{', '.join(models)} × {len(methods)} {'method' if len(methods) == 1 else 'methods'}"
    if job.kind == "run":
        item = (job.spec.get("items") or [{}])[0]
        return f"{job.spec.get('method_id', '?')} on {item.get('model', '?')}"
    return "advisor training"


def job_row(job: Job) -> dict:
    """A job for lists: its public figures, words, and what its running items are doing."""
    public = job_public(job)
    states = job.result.get("items", {})
    stages = [p for p in (progress_of(s, job) for s in states.values()) if p and p["stage"] != "queued"]
    return {
        **public,
        "label": job_label(job),
        "kind_words": KIND_WORDS.get(job.kind, job.kind),
        "running_on": [] if job.state in FINISHED else public["running_on"],  # a cancelled job runs nowhere
        "now": stages[0] if stages else None,
        "duration_s": _seconds_between(job.started_at or job.created_at, job.finished_at or utcnow()),
    }


def recent_jobs(session: Session, limit: int = 20, kind: str | None = None) -> list[dict]:
    statement = select(Job).order_by(col(Job.created_at).desc()).limit(limit)
    if kind:
        statement = statement.where(Job.kind == kind)
    return [job_row(job) for job in session.exec(statement)]


def _item_words(item: dict) -> dict:
    from executors.families import workload_from_json

    if item.get("kind") == "train":
        return {"model": "every stored profile", "workload": "", "methods": []}
    try:
        row = workload_from_json(item.get("workload") or {}).row()
        workload = {"id": row["id"], "words": workload_words(row["kind"], row)}
    except (TypeError, ValueError):
        workload = {"id": "", "words": json.dumps(item.get("workload"))}
    configs = item.get("methods") or [item.get("method") or {}]
    return {"model": item.get("model", ""), "workload": workload, "methods": [c.get("method", "?") for c in configs]}


def job_page(session: Session, job: Job) -> dict:
    """A job with every item: state, node, attempts, start and finish, errors, its profiles."""
    runs = {r.run_id: r for r in session.exec(select(ProfileRun).where(ProfileRun.job_id == job.id))}
    classes = dict(session.exec(select(Node.id, Node.hardware_class)).all())
    items = []
    for index, item in enumerate(job.spec.get("items", [])):
        state = job.result.get("items", {}).get(str(index), {})
        mine = [runs[r] for r in state.get("run_ids", []) if r in runs]
        node = state.get("node") or state.get("requeued_from")
        words = _item_words(item)
        task = (
            {"model": mine[0].model_id, "workload": mine[0].workload_id, "hardware": mine[0].hardware_class}
            if mine
            else None
        )
        items.append(
            {
                "index": index,
                **words,
                "target": item.get("target", {}),
                "state": _shown_state(state.get("state", "queued"), job.state),
                "node": node,
                "hardware": classes.get(node),
                "attempts": state.get("attempts", 0),
                "started": state.get("claimed_at"),
                "finished": state.get("finished_at"),
                "duration_s": _seconds_between(state.get("claimed_at"), state.get("finished_at")),
                "progress": progress_of(state, job),
                "error": state.get("error"),
                "requeue_reason": state.get("requeue_reason"),
                "runs": [_run_summary(r) for r in mine],
                "task": task,
            }
        )
    return {"job": job_row(job), "request": job.spec.get("request"), "item_rows": items, "error": job.error}


def _shown_state(item_state: str, job_state: str) -> str:
    """An unfinished item of a cancelled job will never run (or its report will be refused): say so."""
    if job_state == "cancelled" and item_state in ("queued", "running"):
        return "dropped" if item_state == "queued" else "cut off"
    return item_state


def _run_summary(run: ProfileRun) -> dict:
    return {
        "run_id": run.run_id,
        "method": run.method_id,
        "status": run.status,
        "reason": run.reason,
        "speedup": run.speedup,
        "quality": run.quality_delta,
    }


def run_page(session: Session, job: Job) -> dict:
    """A run: its config and node, the outputs as text, the measured figures beside the prediction."""
    item = (job.spec.get("items") or [{}])[0]
    state = job.result.get("items", {}).get("0", {})
    outputs = job.result.get("outputs") or {}
    runs = list(session.exec(select(ProfileRun).where(ProfileRun.job_id == job.id)))
    # The run's own method, not the baseline it was measured against in the same process.
    measured = next((r for r in runs if r.method_id == job.spec.get("method_id")), None)
    prediction = job.spec.get("recommendation") or job.spec.get("prediction")
    return {
        "job": job_row(job),
        "item": item,
        "words": _item_words(item),
        "config": json.dumps(item.get("method"), indent=2),
        "node": state.get("node") or job.result.get("node"),
        "progress": progress_of(state, job),
        "error": state.get("error"),
        "pairs": list(zip(item.get("prompts", []), outputs.get("texts") or [], strict=False)),
        "measured": measured.model_dump() if measured else None,  # plain: the page renders after the session
        "prediction": prediction,
        "no_prediction": job.spec.get("no_prediction"),
        "verdicts": verdicts(prediction, measured, job.state in FINISHED),
    }


def verdicts(prediction: dict | None, measured: ProfileRun | None, finished: bool) -> list[dict]:
    """For speed-up and quality: the prediction and its interval, the measurement, hit or miss (the
    prediction is shown before a measurement exists, and for a run that does not measure)."""
    if not prediction:
        return []
    rows = []
    for label, key, interval, value in (
        ("Speed-up", "speedup", "speedup_interval", measured.speedup if measured else None),
        ("Quality change", "quality_delta", "quality_interval", measured.quality_delta if measured else None),
    ):
        low, high = (prediction.get(interval) or (None, None))[:2]
        if value is None or low is None or high is None:
            verdict = "not measured" if finished else "waiting for the run"
        elif low <= value <= high:
            verdict = "hit"
        else:
            verdict = "miss: above" if value > high else "miss: below"
        rows.append(
            {
                "label": label,
                "key": key,
                "predicted": prediction.get(key),
                "interval": (low, high),
                "measured": value,
                "verdict": verdict,
            }
        )
    return rows


def dashboard(session: Session) -> dict:
    mark_lost_nodes(session, get_settings().node_lost_after_s)
    unfinished = session.exec(select(Job).where(col(Job.state).not_in(FINISHED))).all()
    live = {job.id: job for job in unfinished}
    queued = sum(1 for job in unfinished for item in job.result.get("items", {}).values() if item["state"] == "queued")
    active = session.exec(select(AdvisorVersion).where(AdvisorVersion.active)).first()
    nodes = []
    for node in session.exec(select(Node).order_by(Node.status, Node.id)):
        current = (node.current_item or "").split(":")[0]  # "job id:item index", from its heartbeat
        job = live.get(current) if node.status == "online" else None  # a finished job is no node's current job
        nodes.append({**node.model_dump(mode="json"), "current_job": job_row(job) if job else None})
    return {
        "nodes": nodes,
        "queued_items": queued,
        "unfinished_jobs": len(unfinished),
        "jobs": recent_jobs(session, 10),
        "profile_count": session.exec(select(func.count()).select_from(ProfileRun)).one(),
        "advisor": active.model_dump(mode="json", include={"id", "created_at", "n_profiles", "learner"})
        if active
        else None,
        "advisor_score": active_score(active),
        "training": training_status(session),
    }


def methods_page(session: Session) -> tuple[list[dict], list[dict]]:
    """Every catalogue row with its registered methods, where they were profiled, or why there are
    none; then the registered methods that come from outside the seed catalogue."""
    registered, outside = defaultdict(list), []
    for method in session.exec(select(Method).order_by(Method.id)):
        if method.catalogue_row is None:
            outside.append(method)
        else:
            registered[method.catalogue_row].append(method)
    profiled = defaultdict(set)
    for method_id, hardware_class in session.exec(
        select(ProfileRun.method_id, ProfileRun.hardware_class).where(ProfileRun.status == "ok").distinct()
    ):
        for part in method_id.split("+"):
            profiled[part].add(hardware_class)
    rows = []
    for entry in catalogue():
        methods = registered.get(entry["row"], [])
        not_a_method = entry["executable"].lower().startswith("no")
        status = "implemented" if methods else "not a method" if not_a_method else "not implemented yet"
        rows.append(
            {
                **entry,
                "status": status,
                "methods": [{"id": m.id, "hardware": sorted(profiled.get(m.id, ()))} for m in methods],
                "why": entry["executable"] if not_a_method else "",
            }
        )
    extra = [
        {"id": m.id, "family": m.family, "title": m.paper_title, "hardware": sorted(profiled.get(m.id, ()))}
        for m in outside
    ]
    return rows, extra


def model_name(model: ModelSpec) -> str:
    """What a person calls a registered model: its folder's name, a config-only model's own name,
    else its id (a local id is a whole path, too long to read in a list)."""
    if model.id.startswith("local:"):
        return Path(model.id.removeprefix("local:")).name or model.id
    return model.descriptors.get("name") or model.id


def models_page(session: Session) -> list[dict]:
    """Every registered model, newest first (a model just registered is on top), with its stored
    profile count: none means the advisor can only answer for it zero-shot."""
    counts = dict(session.exec(select(ProfileRun.model_id, func.count()).group_by(ProfileRun.model_id)).all())
    return [
        {
            "id": model.id,
            "name": model_name(model),
            "family": model.family,
            "params": model.params,
            "weights": has_weights(model),  # the rule the API's make_sure follows
            "config_only": model.descriptors.get("origin") == "config",
            "profiles": counts.get(model.id, 0),
        }
        for model in session.exec(select(ModelSpec).order_by(col(ModelSpec.created_at).desc(), ModelSpec.id))
    ]
