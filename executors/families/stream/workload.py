"""The request-stream workload: serving methods against static batching.

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
import math
import random
import statistics
from dataclasses import asdict, dataclass

from executors.families.lm.workloads import MAX_BATCH, heldout_prompts
from executors.families.stream.requests import Request, StreamResult
from executors.registry import ModelBundle, bounded, context_length
from profiles.models import workload_id_for

STATIC_ID = "serve.static_batching"
KIND = "lm-stream"


@dataclass(frozen=True)
class StreamWorkload:
    requests: int = bounded(16, 1, 1024)
    load: float = bounded(0.5, 0.0, 100.0)  # offered load relative to static batching's capacity (when rate is 0)
    rate: float = bounded(0.0, 0.0, 10_000.0)  # arrivals per second; 0 = derived from load
    max_batch: int = bounded(4, 1, MAX_BATCH)  # requests served at once (the engine's slots)
    prompt_lens: tuple[int, ...] = bounded((16, 64, 160), 1, 8192, items=16)  # user-prompt lengths, drawn uniformly
    prefix_len: int = bounded(64, 0, 8192)  # length of each shared system prompt
    prefixes: int = bounded(2, 1, 64)  # distinct system prompts
    shared: float = bounded(0.75, 0.0, 1.0)  # fraction of requests behind a system prompt
    gen_lens: tuple[int, ...] = bounded((8, 32), 1, 4096, items=16)  # new tokens per request, drawn uniformly
    seed: int = bounded(0, 0, 2**31 - 1)
    objective: str = "throughput"

    def __post_init__(self):
        object.__setattr__(self, "prompt_lens", tuple(self.prompt_lens))
        object.__setattr__(self, "gen_lens", tuple(self.gen_lens))
        if not self.prompt_lens or not self.gen_lens:  # both are drawn from: an empty list has nothing to draw
            raise ValueError("prompt_lens and gen_lens need at least one length each")
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
        context = context_length(bundle.model)
        if need > context:
            return f"prefix + prompt + generation = {need} tokens exceeds the model's context of {context}"
        return None


def parse_grid(text: str) -> list[StreamWorkload]:
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
    return [StreamWorkload(**dict(zip(axes, combo, strict=False))) for combo in itertools.product(*axes.values())]


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
    itl = [b - a for s in states for a, b in zip(s.token_times, s.token_times[1:], strict=False)]
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


def describe(workload: StreamWorkload) -> str:
    return f"stream {workload.requests} requests load {workload.load or workload.rate} max batch {workload.max_batch}"
