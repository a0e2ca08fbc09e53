"""The workload kinds a task can have, and for each its class, its reference and its harness.

A profiling task is (model, workload, hardware class). The CLI grid, the Celery worker and the
API all turn a workload's JSON into an object here, so every kind is validated, referenced and
measured the same way wherever it enters.
"""

from __future__ import annotations

from collections.abc import Callable

from executors.encoder_harness import measure_encoder
from executors.encoder_workloads import EMBED_KIND, EmbedWorkload
from executors.harness import BASELINE_ID, Prepared, measure
from executors.longctx import LongContextWorkload
from executors.stream_harness import KIND as STREAM_KIND
from executors.stream_harness import STATIC_ID, StreamWorkload, measure_stream
from executors.workloads import LMWorkload, workload_from_fields

WORKLOAD_KINDS: dict[str, type] = {
    "lm-generate": LMWorkload,
    LongContextWorkload.kind: LongContextWorkload,
    EMBED_KIND: EmbedWorkload,
    STREAM_KIND: StreamWorkload,
}


def workload_from_json(data: dict):
    """The workload object for a JSON shape; its "kind" picks the class (default: LM generation)."""
    if not isinstance(data, dict):
        raise ValueError("a workload is a JSON object")
    kind = data.get("kind", "lm-generate")
    if kind not in WORKLOAD_KINDS:
        raise ValueError(f"unknown workload kind {kind!r}; known: {', '.join(WORKLOAD_KINDS)}")
    return workload_from_fields(WORKLOAD_KINDS[kind], data)


def reference_method(workload) -> str:
    """What a task's speed-ups divide by: static batching for a request stream, else the plain model."""
    return STATIC_ID if isinstance(workload, StreamWorkload) else BASELINE_ID


def harness_for(workload) -> Callable[..., list[dict]]:
    if isinstance(workload, StreamWorkload):
        return measure_stream
    if isinstance(workload, EmbedWorkload):
        return measure_encoder
    return measure


def measurement_passes(runners: list[Prepared]) -> list[list[Prepared]]:
    """Splits runners so no pass holds two configs of one method: a harness files figures by method id.

    Each extra pass measures the reference again (its record is stored once), so ratios stay same-process.
    """
    passes: list[list[Prepared]] = []
    for runner in runners:
        free = next((p for p in passes if all(other.method_id != runner.method_id for other in p)), None)
        if free is None:
            passes.append(free := [])
        free.append(runner)
    return passes or [[]]
