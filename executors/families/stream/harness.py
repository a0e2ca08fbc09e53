"""The request-stream hook: serving methods against static batching on the same stream.

The session measures what static batching serves when everything arrives at once (in the
warm-up) and turns the workload's offered load into an arrival rate; every method then serves
the same seeded stream. A call's timed figure is the stream's makespan (first arrival to last
token), so the speed-up is the throughput ratio; time to first token and inter-token latency go
beside it, with the schedule counts that show what a method changed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from executors.families.stream.requests import Request
from executors.families.stream.workload import StreamWorkload, build_requests, schedule_counts, stream_figures
from executors.protocol import KindHarness, Quality

LATENCIES = ("ttft_p50_s", "ttft_p99_s", "itl_p50_s", "itl_p99_s")


@dataclass(frozen=True)
class StreamSession:
    requests: list[Request]
    max_batch: int
    arrival_rate_rps: float | None
    static_capacity_rps: float


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


class StreamHarness(KindHarness):
    unit = "tok/s"

    def session(self, bundle, workload, device, baseline, warmup):
        saturated = build_requests(bundle, workload, math.inf)
        warm = [baseline.runner.serve(saturated, workload.max_batch) for _ in range(max(1, warmup))]
        capacity = workload.requests / statistics.median(r.wall_s for r in warm)
        rate = workload.rate or workload.load * capacity
        return StreamSession(build_requests(bundle, workload, rate), workload.max_batch, rate, capacity)

    def call(self, runner, session, workload, seed):
        return runner.serve(session.requests, session.max_batch)

    def elapsed(self, output, seconds):
        return stream_figures(output)["makespan_s"]

    def items(self, workload, session):
        return float(sum(r.max_new_tokens for r in session.requests))

    def working_bytes(self, bundle, workload, outputs):
        return max(r.peak_blocks for r in outputs) * outputs[0].block_bytes

    def quality(self, prepared, baseline, bundle, workload, session, outputs) -> Quality:
        mine = [s.output for s in outputs[prepared.method_id][-1].requests]
        reference = [s.output for s in outputs[baseline.method_id][-1].requests]
        matched = sum(a == b for out, ref in zip(mine, reference, strict=False) for a, b in zip(out, ref, strict=False))
        match = matched / sum(len(ref) for ref in reference)
        exact = statistics.mean(out == ref for out, ref in zip(mine, reference, strict=False))
        return Quality("greedy_token_match", 1.0, match, match - 1.0,
                       metrics={"greedy_token_match": match, "exact_sequence_match": exact})  # fmt: skip

    def metrics(self, prepared, baseline, bundle, workload, session, outputs) -> dict:
        figures = [stream_figures(r) for r in outputs[prepared.method_id]]
        base_figures = [stream_figures(r) for r in outputs[baseline.method_id]]
        latency = {key: _median(figures, key) for key in LATENCIES}
        base_latency = {f"baseline_{key}": _median(base_figures, key) for key in LATENCIES}
        return {
            "latency_basis": "stream makespan (first arrival to last token)",
            "baseline_method": baseline.method_id,
            **latency,
            **base_latency,
            "ttft_p50_speedup": base_latency["baseline_ttft_p50_s"] / latency["ttft_p50_s"],
            "itl_p99_speedup": base_latency["baseline_itl_p99_s"] / max(latency["itl_p99_s"], 1e-9),
            "arrival_rate_rps": session.arrival_rate_rps,
            "static_capacity_rps": session.static_capacity_rps,
            "peak_mem_basis": "weights + peak KV blocks",
            **schedule_counts(outputs[prepared.method_id][-1]),
        }


def observe(runner, bundle) -> dict:
    """What the registry suite compares with static batching: the schedule of a stream that all
    arrives at once (deterministic: no clock in it) and the tokens served."""
    workload = StreamWorkload(requests=6, max_batch=2, prompt_lens=(16, 96), prefix_len=64, gen_lens=(4, 12))
    result = runner.serve(build_requests(bundle, workload, math.inf), workload.max_batch)
    return {"schedule": schedule_counts(result), "tokens": [s.output for s in result.requests]}
