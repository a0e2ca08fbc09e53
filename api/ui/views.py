"""What the pages show, read from the store: summaries, the catalogue crossed with the registry,
the profiles heatmap and Pareto front, the advisor's evaluation. Reads only; every change goes
through the REST routes' own functions (see actions.py)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from sqlmodel import Session, func, select

from api.jobs import FINISHED, job_public
from api.routes.catalog import _filtered
from api.routes.workers import mark_lost_nodes
from profiles.models import AdvisorVersion, Job, Method, Node, ProfileRun, Workload
from profiles.settings import get_settings

CATALOGUE = Path(__file__).with_name("static") / "catalogue.json"
HEATMAP_ROWS = 200  # more tasks than this is unreadable; the page says so and asks for filters
ADVISOR_SELECTOR = "lightgbm"  # the selector the shipped advisor uses, as named in the evaluation report
FILTERS = ("model_id", "method_id", "hardware_class", "workload_id")


@lru_cache
def catalogue() -> list[dict]:
    return json.loads(CATALOGUE.read_text())


def advisor_score(version: AdvisorVersion | None) -> dict | None:
    """The advisor's own selector on each evaluated split: gap closed and top-1 (3 % tie)."""
    if version is None:
        return None
    splits = (version.evaluation or {}).get("splits", {})
    return {
        name: {
            "gap_closed": sel[ADVISOR_SELECTOR]["gap_closed"]["mean"],
            "top1_tol": sel[ADVISOR_SELECTOR]["top1_tol"]["mean"],
        }
        for name, sel in splits.items()
        if ADVISOR_SELECTOR in sel
    }


def recent_jobs(session: Session, limit: int = 20, kind: str | None = None) -> list[dict]:
    statement = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if kind:
        statement = statement.where(Job.kind == kind)
    return [{**job_public(job), "label": job_label(job)} for job in session.exec(statement)]


def job_label(job: Job) -> str:
    if job.kind == "profiling":
        request = job.spec.get("request", {})
        return f"{', '.join(request.get('models', []))} × {len(request.get('methods', []))} methods"
    if job.kind == "run":
        return f"run of {job.spec.get('method_id', '?')}"
    return "advisor training"


def dashboard(session: Session) -> dict:
    mark_lost_nodes(session, get_settings().node_lost_after_s)
    unfinished = session.exec(select(Job).where(Job.state.not_in(FINISHED))).all()
    queued = sum(1 for job in unfinished for item in job.result.get("items", {}).values() if item["state"] == "queued")
    active = session.exec(select(AdvisorVersion).where(AdvisorVersion.active)).first()
    nodes = [
        {**n.model_dump(mode="json"), "current_job": n.labels.get("current_job")}
        for n in session.exec(select(Node).order_by(Node.status, Node.id))
    ]
    return {
        "nodes": nodes,
        "queued_items": queued,
        "unfinished_jobs": len(unfinished),
        "jobs": recent_jobs(session, 10),
        "profile_count": session.exec(select(func.count()).select_from(ProfileRun)).one(),
        "advisor": active.model_dump(mode="json", include={"id", "created_at", "n_profiles", "learner"})
        if active
        else None,
        "advisor_score": advisor_score(active),
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


def workload_labels(session: Session) -> dict[str, str]:
    """Workload id → a readable shape ("b1 · p16 · g8 greedy"), for menus and table rows."""
    return {
        w.id: f"b{w.batch_size} · p{w.prompt_len} · g{w.gen_len} {w.sampling}" for w in session.exec(select(Workload))
    }


def filter_options(session: Session) -> dict:
    """Each filter's choices as (value, label) pairs."""
    column = {
        "model_id": ProfileRun.model_id,
        "method_id": ProfileRun.method_id,
        "hardware_class": ProfileRun.hardware_class,
        "workload_id": ProfileRun.workload_id,
    }
    labels = workload_labels(session)
    return {
        name: [(v, labels.get(v, v)) for v in sorted(session.exec(select(col).distinct()))]
        for name, col in column.items()
    }


def filtered_runs(session: Session, filters: dict) -> list[ProfileRun]:
    statement = _filtered(*(filters.get(name) for name in FILTERS), None)
    return list(session.exec(statement.order_by(ProfileRun.model_id, ProfileRun.workload_id, ProfileRun.method_id)))


def heatmap(runs: list[ProfileRun], labels: dict[str, str]) -> dict:
    """Tasks (model × workload × hardware class) × methods of measured speed-ups, best per row marked."""
    cells: dict[tuple, dict[str, float]] = defaultdict(dict)
    for run in runs:
        if run.status == "ok" and run.speedup is not None:
            cells[(run.model_id, run.workload_id, run.hardware_class)][run.method_id] = run.speedup
    methods = sorted({m for row in cells.values() for m in row})
    rows = []
    for task in sorted(cells)[:HEATMAP_ROWS]:
        values = cells[task]
        best = max(values, key=values.get)
        rows.append(
            {
                "model": task[0],
                "workload": labels.get(task[1], task[1]),
                "hardware": task[2],
                "best": best,
                "cells": [{"method": m, "speedup": values.get(m), "best": m == best} for m in methods],
            }
        )
    return {"methods": methods, "rows": rows, "n_tasks": len(cells), "truncated": len(cells) > HEATMAP_ROWS}


def cell_colour(speedup: float | None) -> str:
    """Green for faster, red for slower, by log speed-up (2× and ½× saturate)."""
    if speedup is None or speedup <= 0:
        return "transparent"
    strength = min(1.0, abs(math.log2(speedup)))
    hue = 130 if speedup >= 1 else 5
    return f"hsl({hue} 60% {95 - 35 * strength:.0f}%)"


def pareto(runs: list[ProfileRun]) -> dict:
    """Quality change vs speed-up points and the front no other point beats on both."""
    points = [
        {
            "speedup": r.speedup,
            "quality": r.quality_delta,
            "label": f"{r.method_id} · {r.model_id} · {r.hardware_class}",
        }
        for r in runs
        if r.status == "ok" and r.speedup is not None and r.quality_delta is not None
    ]
    front, best_quality = [], -math.inf
    for point in sorted(points, key=lambda p: (-p["speedup"], -p["quality"])):
        if point["quality"] > best_quality:
            front.append(point)
            best_quality = point["quality"]
    return {"points": points, "front": front}


def advisor_page(session: Session) -> dict:
    versions = list(session.exec(select(AdvisorVersion).order_by(AdvisorVersion.created_at.desc())))
    active = next((v for v in versions if v.active), None)
    evaluation = (active.evaluation or {}) if active else {}
    metrics = ("top1", "top1_tol", "mean_regret", "gap_closed", "ndcg3")
    tables = {
        split: [
            {"selector": name, **{m: sel[m]["mean"] for m in metrics if m in sel}}
            for name, sel in selectors.items()
            if not name.startswith("_")
        ]
        for split, selectors in evaluation.get("splits", {}).items()
    }
    return {
        "versions": [v.model_dump(mode="json", exclude={"evaluation", "artefact_path"}) for v in versions],
        "active": active.id if active else None,
        "tables": tables,
        "metrics": metrics,
        "importance": feature_importance(session) if active else [],
        "jobs": recent_jobs(session, 5, kind="train"),
    }


def feature_importance(session: Session, top: int = 15) -> list[dict]:
    """Total split gain per feature of the active advisor's speed-up model."""
    from advisor.api import active_advisor

    found = active_advisor(session)
    if found is None or "log_speedup" not in found[1].learners:
        return []
    booster = found[1].learners["log_speedup"].boosters_["point"]
    gains = booster.feature_importance(importance_type="gain")
    total = float(gains.sum()) or 1.0
    ranked = sorted(zip(booster.feature_name(), gains), key=lambda pair: -pair[1])[:top]
    return [{"feature": name, "share": float(gain) / total} for name, gain in ranked]
