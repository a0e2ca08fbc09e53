"""The request-stream workload and its profiler: serving methods against static batching.

A stream is a seeded list of requests: held-out prompts of mixed lengths, most of them behind
one of a few shared system prompts, each with its own number of new tokens, arriving as a
Poisson process. The arrival rate is either absolute (`rate`, requests/s) or an offered `load`
relative to what static batching serves on this model and node when everything arrives at
once, measured in the warm-up; so load 0.5 is a half-idle server and load 4 a queue that
builds up on any hardware. Every method serves the same stream, interleaved round by round
with static batching in the same process (DESIGN.md §6); speed-up = median of the per-round
throughput ratios, and the latency figures (TTFT, inter-token latency) sit in the metrics.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from executors.harness import Prepared, _error, model_bytes, prepare, record_base
from executors.registry import ModelBundle, default_config
from executors.serving import Request, StreamResult
from executors.workloads import heldout_prompts
from profiles.models import utcnow, workload_id_for

log = logging.getLogger(__name__)

STATIC_ID = "serve.static_batching"
KIND = "lm-stream"


@dataclass(frozen=True)
class StreamWorkload:
    requests: int = 16
    load: float = 0.5  # offered load relative to static batching's capacity (used when rate is 0)
    rate: float = 0.0  # arrivals per second; 0 = derived from load
    max_batch: int = 4  # requests served at once (the engine's slots)
    prompt_lens: tuple[int, ...] = (16, 64, 160)  # user-prompt lengths, drawn uniformly
    prefix_len: int = 64  # length of each shared system prompt
    prefixes: int = 2  # distinct system prompts
    shared: float = 0.75  # fraction of requests behind a system prompt
    gen_lens: tuple[int, ...] = (8, 32)  # new tokens per request, drawn uniformly
    seed: int = 0
    objective: str = "throughput"

    def __post_init__(self):
        object.__setattr__(self, "prompt_lens", tuple(self.prompt_lens))
        object.__setattr__(self, "gen_lens", tuple(self.gen_lens))
        if min(self.requests, self.max_batch, self.prefixes, *self.prompt_lens, *self.gen_lens) < 1:
            raise ValueError("requests, max_batch, prefixes and every prompt/gen length must be positive")
        if self.rate < 0 or self.load < 0 or not (self.rate or self.load):
            raise ValueError("give a positive rate (requests/s) or load")
        if not 0 <= self.shared <= 1 or self.prefix_len < 0:
            raise ValueError("shared must lie in [0, 1] and prefix_len must not be negative")

    @property
    def batch_size(self) -> int:
        return self.max_batch

    @property
    def prompt_len(self) -> int:
        return round(self.shared * self.prefix_len + statistics.mean(self.prompt_lens))

    @property
    def gen_len(self) -> int:
        return max(self.gen_lens)

    def shape(self) -> dict:
        return {"kind": KIND, **asdict(self)}

    @property
    def id(self) -> str:
        return workload_id_for(self.shape())

    def row(self) -> dict:
        params = {k: v for k, v in asdict(self).items() if k not in ("max_batch", "objective")}
        params.update(
            shared_token_fraction=round(self.shared * self.prefix_len / max(1, self.prompt_len), 4),
            mean_gen_len=statistics.mean(self.gen_lens),
        )
        return {
            "id": self.id,
            "kind": KIND,
            "batch_size": self.max_batch,
            "prompt_len": self.prompt_len,
            "gen_len": self.gen_len,
            "sampling": "greedy",
            "objective": self.objective,
            "params": params,
        }

    def fits(self, bundle: ModelBundle) -> str | None:
        need = self.prefix_len + max(self.prompt_lens) + self.gen_len
        if need > bundle.model.config.max_seq_len:
            return f"prefix + prompt + generation = {need} tokens exceeds the model's context of {bundle.model.config.max_seq_len}"
        return None


def parse_stream_workloads(text: str) -> list[StreamWorkload]:
    """`requests=16 load=0.5,4 batch=4,8 prompt=16+64+160 gen=8+32`: commas span a grid, + mixes."""
    names = {
        "requests": "requests",
        "load": "load",
        "rate": "rate",
        "batch": "max_batch",
        "prompt": "prompt_lens",
        "prefix": "prefix_len",
        "prefixes": "prefixes",
        "shared": "shared",
        "gen": "gen_lens",
        "seed": "seed",
        "objective": "objective",
    }
    axes: dict[str, list] = {}
    for part in text.split():
        key, _, values = part.partition("=")
        if key not in names:
            raise ValueError(f"unknown stream axis {key!r}; use {', '.join(names)}")
        field = names[key]
        kind = type(getattr(StreamWorkload(), field))
        if kind is tuple:
            axes[field] = [tuple(int(v) for v in value.split("+")) for value in values.split(",")]
        else:
            axes[field] = [value if kind is str else kind(value) for value in values.split(",")]
    return [StreamWorkload(**dict(zip(axes, combo))) for combo in itertools.product(*axes.values())]


def build_requests(bundle: ModelBundle, workload: StreamWorkload, rate: float) -> list[Request]:
    """The same requests for any rate: arrivals are one seeded unit-rate Poisson process, scaled."""
    rng = random.Random(workload.seed)
    systems = heldout_prompts(bundle, workload.prefixes, workload.prefix_len).tolist() if workload.prefix_len else [[]]
    users = {
        n: heldout_prompts(bundle, workload.requests, n, offset=workload.prefixes).tolist()
        for n in set(workload.prompt_lens)
    }
    requests, clock = [], 0.0
    for i in range(workload.requests):
        if i:
            clock += rng.expovariate(1.0)
        prefix = systems[rng.randrange(len(systems))] if rng.random() < workload.shared else []
        user = users[rng.choice(workload.prompt_lens)][i]
        arrival = clock / rate if math.isfinite(rate) else 0.0
        requests.append(Request(tuple(prefix + user), rng.choice(workload.gen_lens), arrival))
    return requests


def _tail(values: list[float], percent: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def stream_figures(result: StreamResult) -> dict:
    """Throughput over the whole stream; time to first token and inter-token latency per request."""
    states = result.requests
    makespan = max(s.token_times[-1] for s in states) - min(s.request.arrival_s for s in states)
    ttft = [s.token_times[0] - s.request.arrival_s for s in states]
    itl = [b - a for s in states for a, b in zip(s.token_times, s.token_times[1:])]
    return {
        "throughput": result.generated_tokens / makespan,
        "makespan_s": makespan,
        "ttft_p50_s": statistics.median(ttft),
        "ttft_p99_s": _tail(ttft, 99),
        "itl_p50_s": statistics.median(itl) if itl else 0.0,
        "itl_p99_s": _tail(itl, 99),
    }


def schedule_counts(result: StreamResult) -> dict:
    """What the scheduler did: the evidence that a method really changed the schedule."""
    return {
        "iterations": len(result.schedule),
        "prefill_tokens_computed": result.prefill_tokens_computed,
        "prompt_tokens": sum(len(s.request.prompt) for s in result.requests),
        "prefix_hit_tokens": sum(s.cached_tokens for s in result.requests),
        "prefill_chunks": sum(s.chunks for s in result.requests),
        "midflight_admissions": sum(s.admitted_while_running for s in result.requests),
        "peak_kv_blocks": result.peak_blocks,
    }


def measure_stream(
    bundle: ModelBundle,
    workload: StreamWorkload,
    methods: Sequence[Prepared],
    node: dict,
    *,
    device: torch.device,
    reps: int = 5,
    warmup: int = 1,
    seed: int = 0,
    baseline: Prepared | None = None,
) -> list[dict]:
    """Profiles every prepared serving method (and static batching) on one stream; returns records."""
    if reps < 5:
        raise ValueError("the protocol needs at least 5 timed repetitions")
    started_at = utcnow()
    baseline = baseline or prepare(bundle, [default_config(STATIC_ID)], device, None)
    everyone = [baseline] + [m for m in methods if m.method_id != STATIC_ID]
    misfit = workload.fits(bundle)
    runnable = [p for p in everyone if p.status == "ok"] if misfit is None else []
    unfit = {
        p.method_id: f"{p.method_id} is not a serving method: it has no request scheduler"
        for p in runnable
        if not hasattr(p.runner, "serve")
    }
    runnable = [p for p in runnable if p.method_id not in unfit]
    failures: dict[str, str] = {}
    results: dict[str, list[StreamResult]] = {p.method_id: [] for p in runnable}
    context = {"arrival_rate_rps": workload.rate or None, "static_capacity_rps": None}
    if runnable:
        saturated = build_requests(bundle, workload, math.inf)
        warm = [baseline.runner.serve(saturated, workload.max_batch) for _ in range(max(1, warmup))]
        context["static_capacity_rps"] = workload.requests / statistics.median(r.wall_s for r in warm)
        for prepared in runnable[1:]:
            try:
                for _ in range(warmup):
                    prepared.runner.serve(saturated, workload.max_batch)
            except Exception as exc:  # a failed record, not a dead grid
                log.warning("%s failed on %s: %s", prepared.method_id, workload, exc)
                failures[prepared.method_id] = _error(exc)
        runnable = [p for p in runnable if p.method_id not in failures]
        rate = workload.rate or workload.load * context["static_capacity_rps"]
        context["arrival_rate_rps"] = rate
        stream = build_requests(bundle, workload, rate)
        for round_no in range(reps):
            shift = round_no % len(runnable)  # rotate so no method always follows the same neighbour
            for prepared in runnable[shift:] + runnable[:shift]:
                results[prepared.method_id].append(prepared.runner.serve(stream, workload.max_batch))
    finished_at = utcnow()
    return [
        _record(
            p,
            bundle=bundle,
            workload=workload,
            node=node,
            results=results,
            baseline=baseline,
            failures=failures,
            misfit=misfit or unfit.get(p.method_id),
            context=context,
            started_at=started_at,
            finished_at=finished_at,
        )
        for p in everyone
    ]


def _record(
    prepared: Prepared, *, bundle, workload, node, results, baseline, failures, misfit, context, started_at, finished_at
) -> dict:
    record = record_base(
        prepared,
        bundle=bundle,
        workload=workload,
        node=node,
        started_at=started_at,
        finished_at=finished_at,
        misfit=misfit,
        failures=failures,
    )
    if record["status"] != "ok":
        return record
    mine, base = results[prepared.method_id], results[baseline.method_id]
    figures, base_figures = [stream_figures(r) for r in mine], [stream_figures(r) for r in base]
    ratios = [f["throughput"] / b["throughput"] for f, b in zip(figures, base_figures)]
    makespans = [f["makespan_s"] for f in figures]

    def median_of(rows: list[dict], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    outputs = [s.output for s in mine[-1].requests]
    reference = [s.output for s in base[-1].requests]
    matched = sum(a == b for out, ref in zip(outputs, reference) for a, b in zip(out, ref))
    match = matched / sum(len(ref) for ref in reference)
    exact = statistics.mean(out == ref for out, ref in zip(outputs, reference))
    weights = model_bytes(prepared.runner.model.lm)
    peak = weights + max(r.peak_blocks for r in mine) * mine[0].block_bytes
    base_peak = weights + max(r.peak_blocks for r in base) * base[0].block_bytes
    latency = {key: median_of(figures, key) for key in ("ttft_p50_s", "ttft_p99_s", "itl_p50_s", "itl_p99_s")}
    base_latency = {f"baseline_{key}": median_of(base_figures, key) for key in latency}
    record.update(
        speedup=statistics.median(ratios),
        latency_p50_s=statistics.median(makespans),
        latency_p10_s=_tail(makespans, 10),
        latency_p90_s=_tail(makespans, 90),
        baseline_latency_p50_s=median_of(base_figures, "makespan_s"),
        throughput=median_of(figures, "throughput"),
        baseline_throughput=median_of(base_figures, "throughput"),
        peak_mem_mb=peak / 2**20,
        baseline_peak_mem_mb=base_peak / 2**20,
        quality_metric="greedy_token_match",
        quality_baseline=1.0,
        quality_value=match,
        quality_delta=match - 1.0,
        repeats=len(mine),
        metrics={
            "throughput_unit": "tok/s",
            "latency_basis": "stream makespan (first arrival to last token)",
            "baseline_method": baseline.method_id,
            "pairwise_speedups": [round(r, 4) for r in ratios],
            "makespans_s": [round(t, 5) for t in makespans],
            "baseline_makespans_s": [round(f["makespan_s"], 5) for f in base_figures],
            **latency,
            **base_latency,
            "ttft_p50_speedup": base_latency["baseline_ttft_p50_s"] / latency["ttft_p50_s"],
            "itl_p99_speedup": base_latency["baseline_itl_p99_s"] / max(latency["itl_p99_s"], 1e-9),
            "arrival_rate_rps": context["arrival_rate_rps"],
            "static_capacity_rps": context["static_capacity_rps"],
            "greedy_token_match": match,
            "exact_sequence_match": exact,
            "lossless": prepared.lossless,
            "apply_s": round(prepared.apply_s, 4),
            "peak_mem_basis": "weights + peak KV blocks",
            **schedule_counts(mine[-1]),
        },
    )
    return record
