"""Batch profiling: models × workloads × methods × thread counts, resumable, into the store.

Each task (model, workload, hardware class) is measured in one interleaved pass over the
baseline and every method not yet stored for it, so a rerun only measures what is missing
(the baseline always runs again: ratios need it in the same process). Methods are applied
once per (model, thread count) and reused across that model's workloads; their setup time
goes into every record they produce. Tasks run cheapest first, with the two cheapest of every
(model, threads) pair ahead of the rest, so a grid cut short still covers every model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from executors.families import kind_of, measure, reference_of
from executors.hardware import fingerprint, node_row
from executors.protocol import Prepared, measurement_passes, prepare
from executors.registry import MethodConfig, ModelBundle, composite_id, default_config
from executors.zoo import load_bundle
from profiles.db import session_scope
from profiles.models import ProfileRun, run_id_for
from profiles.transfer import add_records

log = logging.getLogger(__name__)

Composite = tuple[MethodConfig, ...]


@dataclass(frozen=True)
class GridTask:
    source: str
    workload: Any
    threads: int
    params: int
    est_seconds: float


def estimated_seconds(params: int, workload) -> float:
    """A rough cost of one call from the workload's kind (compute-bound prefill, memory-bound decode, …)."""
    estimate = kind_of(workload).call_seconds
    return estimate(params, workload) if estimate else 1.0


def plan(
    sources: Sequence[str],
    workloads: Sequence,
    threads: Sequence[int],
    params: dict[str, int],
    max_call_seconds: float | None = None,
) -> list[GridTask]:
    tasks = []
    for source in sources:
        for thread_count in threads:
            group = sorted(
                (
                    GridTask(source, w, thread_count, params[source], estimated_seconds(params[source], w))
                    for w in workloads
                ),
                key=lambda t: t.est_seconds,
            )
            for rank, task in enumerate(group):
                if max_call_seconds is None or task.est_seconds <= max_call_seconds or rank == 0:
                    tasks.append((rank >= 2, task.est_seconds, task))
    return [task for *_, task in sorted(tasks, key=lambda item: (item[0], item[1], item[2].source))]


def _config_json(composite: Composite) -> dict:
    return Prepared(composite).config_json


def _stored(engine: Engine, run_ids: list[str]) -> set[str]:
    with session_scope(engine) as session:
        return set(session.exec(select(ProfileRun.run_id).where(col(ProfileRun.run_id).in_(run_ids))))


def run_grid(
    engine: Engine,
    sources: Sequence[str],
    composites: Sequence[Composite],
    workloads: Sequence,
    threads: Sequence[int] = (1,),
    *,
    reps: int = 5,
    warmup: int = 1,
    device: str = "cpu",
    max_call_seconds: float | None = None,
    on_task: Callable[[int, int, GridTask, int], None] | None = None,
) -> dict:
    """Measures every missing record; returns counts. `on_task(done, total, task, added)` reports progress."""
    dev = torch.device(device)
    bundles: dict[str, ModelBundle] = {}
    prepared: dict[tuple[str, int, str], Prepared] = {}
    nodes: dict[int, dict] = {}
    params = {}
    for source in sources:
        bundles[source] = load_bundle(source)
        if dev.type != "cpu":  # methods copy and transform the model on the device it will run on
            bundles[source].model.to(dev)
        params[source] = bundles[source].spec.params
    tasks = plan(sources, workloads, threads, params, max_call_seconds)
    totals = {"tasks": len(tasks), "measured_tasks": 0, "added": 0, "skipped_tasks": 0}
    for done, task in enumerate(tasks, start=1):
        torch.set_num_threads(task.threads)
        if task.threads not in nodes:
            nodes[task.threads] = node_row(fingerprint(device, _cache_dir()))
        node, bundle = nodes[task.threads], bundles[task.source]
        reference = reference_of(task.workload)
        wanted = [(reference, (default_config(reference),))] + [
            (composite_id(c), c) for c in composites if composite_id(c) != reference
        ]
        ids = {run_id_for(task.source, task.workload.id, mid, _config_json(c), node["id"]): mid for mid, c in wanted}
        stored = _stored(engine, list(ids))
        missing = [
            c
            for mid, c in wanted[1:]
            if run_id_for(task.source, task.workload.id, mid, _config_json(c), node["id"]) not in stored
        ]
        added = 0
        if missing or len(stored) < len(ids):
            runners = []
            for composite in [(default_config(reference),)] + missing:
                key = (task.source, task.threads, repr(composite))
                if key not in prepared:
                    prepared[key] = prepare(bundle, composite, dev)
                runners.append(prepared[key])
            for group in measurement_passes(runners[1:]):
                records = measure(
                    bundle, task.workload, group, node, device=dev, reps=reps, warmup=warmup, baseline=runners[0]
                )
                with session_scope(engine) as session:
                    added += add_records(session, enumerate(records, start=1)).added
            totals["measured_tasks"] += 1
            totals["added"] += added
        else:
            totals["skipped_tasks"] += 1
        if on_task is not None:
            on_task(done, len(tasks), task, added)
    return totals


def _cache_dir():
    from profiles.settings import get_settings

    return get_settings().cache_dir
