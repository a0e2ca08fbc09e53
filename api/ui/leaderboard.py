"""The profiles page's data: one leaderboard per task (model × workload × hardware class), a
heatmap over every task with the methods grouped by family, and the quality/speed-up front.

Only the columns a page shows are read (never the JSON blobs of every run), so the page stays
fast on the whole shipped grid."""

from __future__ import annotations

import math
from collections import defaultdict
from urllib.parse import urlencode

from sqlmodel import Session, col, select

from api.ui.words import quality_words, workload_words
from profiles.models import Method, ProfileRun, Workload

HEATMAP_ROWS = 400  # beyond this a heatmap is unreadable: the page says so and asks for a filter
FAMILY_ORDER = (
    ("reference", "reference"),
    ("quantization", "quantization"),
    ("pruning", "pruning"),
    ("lm-decode", "decoding"),
    ("attention-sparsity", "attention"),
    ("serving", "serving"),
    ("system", "system"),
    ("combination", "combinations"),
)
# key, heading, unit, shown by default; the page's column picker and the URL's cols= use the keys
COLUMNS = (
    ("speedup", "Speed-up", "×", True),
    ("quality", "Quality change", "%", True),
    ("latency", "Latency p50", "ms", True),
    ("throughput", "Throughput", "", True),
    ("memory", "Peak memory", "MB", True),
    ("latency_p90", "Latency p90", "ms", False),
    ("baseline_latency", "Baseline p50", "ms", False),
    ("memory_change", "Memory vs baseline", "%", False),
    ("setup", "Setup (calibrate, compile)", "s", False),
    ("quality_metric", "Quality measured as", "", False),
    ("node", "Node", "", False),
    ("measured", "Measured", "", False),
)


def families(session: Session) -> dict[str, str]:
    """Method id → family, from the registry's mirror; a composite "a+b" is a combination."""
    return dict(session.exec(select(Method.id, Method.family)).all())


def family_of(method_id: str, known: dict[str, str]) -> str:
    return "combination" if "+" in method_id else known.get(method_id, method_id.split(".")[0])


def workload_index(session: Session) -> dict[str, dict]:
    """Workload id → its kind and its shape in words."""
    return {
        w.id: {"kind": w.kind, "words": workload_words(w.kind, w.model_dump())} for w in session.exec(select(Workload))
    }


def heatmap(session: Session, kind: str = "") -> dict:
    """Tasks × methods of measured speed-ups; methods ordered by family, the best of each row marked."""
    workloads = workload_index(session)
    # sqlmodel's select is typed for at most four columns; five work the same at run time.
    statement = select(  # type: ignore[call-overload]
        ProfileRun.model_id, ProfileRun.workload_id, ProfileRun.hardware_class, ProfileRun.method_id, ProfileRun.speedup
    ).where(ProfileRun.status == "ok", col(ProfileRun.speedup).is_not(None))
    if kind:
        chosen = [k for k, w in workloads.items() if w["kind"] == kind]
        statement = statement.where(col(ProfileRun.workload_id).in_(chosen))
    cells: dict[tuple, dict[str, float]] = defaultdict(dict)
    for model, workload, hardware, method, speedup in session.exec(statement.order_by(col(ProfileRun.created_at))):
        cells[(model, workload, hardware)][method] = speedup  # the latest measurement of a method wins
    known = families(session)
    rank = {name: i for i, (name, _label) in enumerate(FAMILY_ORDER)}
    methods = sorted({m for row in cells.values() for m in row}, key=lambda m: (rank.get(family_of(m, known), 99), m))
    groups: list[dict] = []
    for method in methods:
        family = family_of(method, known)
        if not groups or groups[-1]["family"] != family:
            label = dict(FAMILY_ORDER).get(family, family)
            groups.append({"family": family, "label": label, "methods": []})
        groups[-1]["methods"].append({"id": method, "short": short_method(method)})
    rows = []
    for task in sorted(cells)[:HEATMAP_ROWS]:
        values = cells[task]
        best = max(values, key=lambda m: values[m])
        rows.append(
            {
                "model": task[0],
                "workload": task[1],
                "hardware": task[2],
                "words": workloads.get(task[1], {}).get("words", task[1]),
                "query": urlencode({"model": task[0], "hardware": task[2], "workload": task[1]}),
                "best": best,
                "cells": [(m, values.get(m), m == best) for m in methods],
            }
        )
    kinds = sorted({w["kind"] for w in workloads.values()})
    return {"groups": groups, "methods": methods, "rows": rows, "n_tasks": len(cells), "kinds": kinds}


def short_method(method_id: str) -> str:
    """A method's name inside its family column: "quant.int8_dynamic" → "int8_dynamic"."""
    return "+".join(part.rsplit(".", 1)[-1] for part in method_id.split("+"))


def task_menu(rows: list[dict]) -> list[dict]:
    """The heatmap's tasks grouped by model, for the task picker."""
    menu: dict[str, list] = defaultdict(list)
    for row in rows:
        menu[row["model"]].append(row)
    return [{"model": model, "tasks": tasks} for model, tasks in menu.items()]


def leaderboard(session: Session, model: str, workload: str, hardware: str) -> list[dict]:
    """Every stored run of one task, as the table's rows (numbers raw; the page formats them)."""
    known = families(session)
    statement = select(ProfileRun).where(
        ProfileRun.model_id == model, ProfileRun.workload_id == workload, ProfileRun.hardware_class == hardware
    )
    rows = []
    for run in session.exec(statement.order_by(col(ProfileRun.method_id), col(ProfileRun.created_at))):
        params = (run.config or {}).get("params") or {}
        rows.append(
            {
                "method": run.method_id,
                "family": dict(FAMILY_ORDER).get(family_of(run.method_id, known), family_of(run.method_id, known)),
                "params": ", ".join(f"{k} {v}" for k, v in params.items()),
                "status": run.status,
                "reason": run.reason or "",
                "speedup": run.speedup,
                "quality": run.quality_delta,
                "latency": _ms(run.latency_p50_s),
                "latency_p90": _ms(run.latency_p90_s),
                "baseline_latency": _ms(run.baseline_latency_p50_s),
                "throughput": run.throughput,
                "throughput_unit": (run.metrics or {}).get("throughput_unit", ""),
                "memory": run.peak_mem_mb,
                "memory_change": _change(run.peak_mem_mb, run.baseline_peak_mem_mb),
                "setup": run.setup_s,
                "quality_metric": quality_words(run.quality_metric),
                "node": run.node_id,
                "measured": run.created_at.isoformat()[:16].replace("T", " ") if run.created_at else "",
                "job": run.job_id,
            }
        )
    ok = [r for r in rows if r["speedup"] is not None]
    if ok:
        max(ok, key=lambda r: r["speedup"])["best"] = True
    return rows


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _change(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference - 1


def pareto(rows: list[dict]) -> dict:
    """The task's runs as (speed-up, quality change) points, and the front among speed-ups ≥ 1:
    the runs no other run beats on both. A slower-than-baseline run is never on the front."""
    points = [
        {"speedup": r["speedup"], "quality": r["quality"], "label": r["method"]}
        for r in rows
        if r["speedup"] is not None and r["quality"] is not None and math.isfinite(r["quality"])
    ]
    front, best_quality = [], -math.inf
    for point in sorted(points, key=lambda p: (-p["speedup"], -p["quality"])):
        if point["speedup"] >= 1 and point["quality"] > best_quality:
            front.append(point)
            best_quality = point["quality"]
    return {"points": points, "front": front}


def cell_colour(speedup: float | None) -> str:
    """Green for faster, red for slower, by log speed-up (2× and ½× saturate)."""
    if speedup is None or speedup <= 0:
        return "transparent"
    strength = min(1.0, abs(math.log2(speedup)))
    hue = 130 if speedup >= 1 else 5
    return f"hsl({hue} 60% {95 - 35 * strength:.0f}%)"
