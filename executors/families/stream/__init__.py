"""The `stream` family: request streams served by an LM (`lm-stream`), the serving methods'
workload. Its models are `lm` models; the reference is static batching.

requests.py the runner protocol (requests in, a served stream out) · workload.py the seeded
Poisson stream and its figures · harness.py the protocol hook. The engine every serving method
runs lives beside those methods, `executors/methods/serve/engine.py`.
"""

from __future__ import annotations

from executors.families import Family, WorkloadKind, register_family
from executors.families.lm.workloads import call_seconds as generate_call_seconds
from executors.families.stream.harness import StreamHarness, observe
from executors.families.stream.workload import KIND, STATIC_ID, StreamWorkload, describe, parse_grid


def stream_words(row) -> str:
    params = row.get("params") or {}
    parts = [f"stream of {params.get('requests', '?')} requests", f"load {params.get('load', '?')}"]
    if params.get("shared"):
        parts.append(f"{params['shared']:.0%} share a prefix")
    return " · ".join([*parts, f"batch ≤ {row.get('batch_size') or 1}"])


STREAM = WorkloadKind(
    name=KIND,
    family="stream",
    workload=StreamWorkload,
    reference=STATIC_ID,
    harness=StreamHarness(),
    models=("lm",),
    keyword="stream",
    parse=parse_grid,
    describe=describe,
    words=stream_words,
    call_seconds=lambda params, w: generate_call_seconds(params, w) * w.requests / w.max_batch,
)

register_family(
    Family(
        name="stream",
        description="request streams (Poisson arrivals, shared system prompts) served by an LM; lm models",
        runner_protocol="serve",
        kinds=(STREAM,),
        quality_metrics=("greedy_token_match",),
        hooks={"observe": observe},
    )
)
