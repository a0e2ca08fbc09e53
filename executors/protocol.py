"""The measurement protocol (DESIGN.md §6), once for every family.

Per task (model × workload × node) the reference and every prepared method run round by round
on the same inputs after a warm-up, with the order rotated each round, so machine noise hits
them alike; the speed-up is the median of the per-round reference/method ratios. Setup (apply,
calibration, training; compilation = the first call's excess over steady state) is kept apart
from steady state. A timed repetition repeats the call until it lasts `MIN_REP_S` (a small
encoder batch takes milliseconds, below the timer noise of a loaded machine).

Noise is visible: every record stores the spread of its per-round ratios and the load average
before and after; a method whose spread exceeds `NOISE_BOUND` is measured again (with the
reference, interleaved) up to `MAX_REMEASURES` times, and a record still over the bound says
`noisy`. Quality comes from the family's hook, measured through the runner's own model.

A family plugs in one `KindHarness` per workload kind: the timed call's inputs, the call, the
items a call produces, working memory, quality and the family's own metrics.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from executors.registry import (
    MethodConfig,
    ModelBundle,
    Runner,
    apply_composite,
    composite_id,
    config_to_json,
    method_of,
)
from profiles.models import run_id_for, utcnow

if TYPE_CHECKING:
    from executors.families import WorkloadKind

log = logging.getLogger(__name__)

MIN_REP_S = 0.05
# Spread of the per-round ratios (`ratio_spread`): above this — the middle half of the rounds
# spans more than ×1.3 — a record is re-measured beside the reference, then flagged noisy.
NOISE_BOUND = 0.3
MAX_REMEASURES = 1

Progress = Callable[[str, dict], None]


@dataclass
class Prepared:
    """One method (or composite) applied to one model: a runner, or why there is none."""

    configs: tuple[MethodConfig, ...]
    runner: Runner | None = None
    status: str = "ok"  # ok, failed, not-applicable
    reason: str | None = None
    apply_s: float = 0.0
    quality: dict = field(default_factory=dict)  # a family's per-model quality cache (e.g. held-out perplexity)

    @property
    def method_id(self) -> str:
        return composite_id(self.configs)

    @property
    def applied_runner(self) -> Runner:
        """The runner of a method that applied: only those are timed and asked for their quality."""
        if self.runner is None:
            raise RuntimeError(f"{self.method_id} has no runner ({self.status}: {self.reason})")
        return self.runner

    @property
    def config_json(self) -> dict:
        if len(self.configs) == 1:
            return config_to_json(self.configs[0])
        return {"method": self.method_id, "steps": [config_to_json(c) for c in self.configs]}

    @property
    def lossless(self) -> bool:
        return all(method_of(c).lossless for c in self.configs)


@dataclass(frozen=True)
class Quality:
    """A record's quality: the metric measured through the method's runner and the reference's.

    `informative` is False when the reference sits at the metric's floor (a long-context model
    that retrieves nothing cannot show a retrieval loss): the figure is kept but says so.
    """

    metric: str
    baseline: float
    value: float
    delta: float  # negative = worse (relative for perplexity, absolute for accuracies and matches)
    informative: bool = True
    metrics: dict = field(default_factory=dict)  # supporting figures for the record's metrics


class KindHarness:
    """A family's hook on the protocol for one workload kind; `measure` drives it."""

    unit = "item/s"

    def session(self, bundle: ModelBundle, workload, device: torch.device, baseline: Prepared, warmup: int) -> Any:
        """What every timed call of the task uses (inputs built once)."""
        raise NotImplementedError

    def call(self, runner: Runner, session: Any, workload, seed: int) -> Any:
        """One call on the session's inputs; returns its output."""
        raise NotImplementedError

    def elapsed(self, output: Any, seconds: float) -> float:
        """The timed figure of one call: wall time, unless the output carries its own (a stream's makespan)."""
        return seconds

    def items(self, workload, session: Any) -> float:
        """What one call produces (tokens, sequences, images): throughput = items / latency."""
        return float(workload.batch_size)

    def working_bytes(self, bundle: ModelBundle, workload, outputs: list) -> int:
        """CPU memory beyond the weights (KV cache, activations) given a method's outputs: an estimate."""
        return 0

    def misfit(self, prepared: Prepared, workload) -> str | None:
        """Why this prepared method cannot run this workload (a guidance policy on an unguided task), or None."""
        return None

    def extra_weights(self, runner: Runner) -> int:
        """Bytes of modules a runner holds beside `runner.model` (draft heads, prompt tokens)."""
        return sum(model_bytes(m) for m in getattr(runner, "extra_modules", ()))

    def quality(
        self, prepared: Prepared, baseline: Prepared, bundle: ModelBundle, workload, session, outputs
    ) -> Quality:
        """`outputs` maps each method id to the outputs of its timed calls, in order."""
        raise NotImplementedError

    def metrics(self, prepared: Prepared, baseline: Prepared, bundle: ModelBundle, workload, session, outputs) -> dict:
        """The family's own figures for a record (forward passes, schedule counts, …)."""
        return {}

    def finish_record(self, record: dict, prepared: Prepared, baseline: Prepared, bundle: ModelBundle, workload,
                      session, outputs) -> None:  # fmt: skip
        """Rewrites a measured record's figures where a kind's figure is not the timed call itself (a
        training run's time to its target, from what the session kept); most kinds keep the protocol's."""


def prepare(bundle: ModelBundle, configs: Sequence[MethodConfig], device: torch.device) -> Prepared:
    """Applies a method for `device`. Off the CPU the method is built (trained, calibrated, searched,
    loaded from the artefact cache) on a CPU copy of the model, where every method's build code
    runs, and its runner is then moved to the device; setup time includes the move."""
    prepared = Prepared(tuple(configs))
    for config in prepared.configs:
        reason = method_of(config).supports(bundle, device)
        if reason:
            prepared.status, prepared.reason = "not-applicable", f"{method_of(config).id}: {reason}"
            return prepared
    started = time.perf_counter()
    try:
        if device.type == "cpu":
            prepared.runner = apply_composite(bundle, prepared.configs)
        else:
            prepared.runner = to_device(apply_composite(on_cpu(bundle), prepared.configs), device)
    except Exception as exc:  # a broken method is a failed record, not a crashed grid
        log.warning("%s failed to apply: %s", prepared.method_id, exc)
        prepared.status, prepared.reason = "failed", error_text(exc)
    prepared.apply_s = time.perf_counter() - started
    return prepared


def on_cpu(bundle: ModelBundle) -> ModelBundle:
    """The bundle with a CPU copy of its model (the grid keeps the measured model on the device)."""
    return replace(bundle, model=copy.deepcopy(bundle.model).cpu())


def to_device(runner: Runner, device: torch.device, depth: int = 4) -> Runner:
    """Moves every module and tensor a runner holds (its model, drafters, heads, cached tensors,
    a few attribute levels deep) to `device`. The low-bit kernels dispatch per call on the tensor's
    device, so a kernel label a method took on the CPU copy is taken again for the device."""
    seen: set[int] = set()

    def move(value: Any, level: int) -> Any:
        if isinstance(value, (nn.Module, torch.Tensor)):
            return value.to(device)
        if level >= depth or id(value) in seen or isinstance(value, (str, bytes, int, float, bool, type, ModelBundle)):
            return value  # a bundle's data is shared with the grid's own bundle: never moved
        seen.add(id(value))
        if isinstance(value, list):
            value[:] = [move(item, level + 1) for item in value]
        elif isinstance(value, dict):
            for key, item in value.items():
                value[key] = move(item, level + 1)
        elif isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(move(item, level + 1) for item in value)
        elif hasattr(value, "__dict__") and not inspect.isroutine(value):
            for key, item in vars(value).items():
                moved = move(item, level + 1)
                if moved is not item:
                    object.__setattr__(value, key, moved)  # frozen dataclasses too
        return value

    move(runner, 0)
    stats = getattr(runner, "stats", None)
    if isinstance(stats, dict) and "kernel_backend" in stats:
        from accel_kernels.dispatch import backend_for

        backend, reason = backend_for(device)
        stats.update(kernel_backend=backend if backend == "triton" else stats["kernel_backend"])
        stats.update(kernel_backend_reason=reason)
    return runner


def error_text(exc: BaseException) -> str:
    head = f"{type(exc).__name__}: {exc}"[:1500]
    return head + "\n" + "".join(traceback.format_tb(exc.__traceback__)[-2:])[:400]


def tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def model_bytes(module: torch.nn.Module) -> int:
    """Weights as stored (quantized modules keep packed params, which state_dict exposes)."""
    seen, total = set(), 0
    for value in module.state_dict().values():
        for tensor in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(tensor, torch.Tensor) and tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor_bytes(tensor)
    return total


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ratio_spread(ratios: Sequence[float]) -> float:
    """exp(interquartile range of the log ratios) − 1: one disturbed round of five leaves it alone
    (the range would not), two that agree with each other against the rest do not (the median
    absolute deviation would hide a 3-against-2 split such as 4.4× vs 1.1×)."""
    logs = [math.log(r) for r in ratios if r > 0]
    if len(logs) < 2:
        return 0.0
    return math.exp(quantile(logs, 0.75) - quantile(logs, 0.25)) - 1


def measurement_passes(runners: list[Prepared]) -> list[list[Prepared]]:
    """Splits runners so no pass holds two configs of one method: records are filed by method id.

    Each extra pass measures the reference again (its record is stored once), so ratios stay same-process.
    """
    passes: list[list[Prepared]] = []
    for runner in runners:
        free = next((p for p in passes if all(other.method_id != runner.method_id for other in p)), None)
        if free is None:
            free = []
            passes.append(free)
        free.append(runner)
    return passes or [[]]


class _Timer:
    """Times calls of one task's runners on the harness's session, CUDA-synchronised."""

    def __init__(self, harness: KindHarness, session, workload, seed: int, device: torch.device):
        self.harness, self.session, self.workload, self.seed, self.device = harness, session, workload, seed, device
        self.calls = 1

    def time(self, runner: Runner, calls: int) -> tuple[float, Any]:
        total, output = 0.0, None
        for _ in range(calls):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            output = self.harness.call(runner, self.session, self.workload, self.seed)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            total += self.harness.elapsed(output, time.perf_counter() - start)
        return total / calls, output


@dataclass
class _Timings:
    times: dict[str, list[float]] = field(default_factory=dict)
    rounds: dict[str, list[int]] = field(default_factory=dict)  # the round each of `times` was taken in
    warm: dict[str, list[float]] = field(default_factory=dict)
    outputs: dict[str, list] = field(default_factory=dict)  # every timed call's output, by method
    mem: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    remeasured: set[str] = field(default_factory=set)
    next_round: int = 0

    def paired(self, prepared: Prepared, baseline: Prepared) -> tuple[list[float], list[float]]:
        """(reference times, method times) of the rounds both ran in."""
        base = dict(zip(self.rounds[baseline.method_id], self.times[baseline.method_id], strict=False))
        mine = list(zip(self.rounds[prepared.method_id], self.times[prepared.method_id], strict=False))
        return [base[r] for r, _ in mine], [t for _, t in mine]


def _rounds(timer: _Timer, runnable: list[Prepared], reps: int, timings: _Timings, progress: Progress | None) -> None:
    for round_no in range(reps):
        if progress:
            progress("measuring", {"round": round_no + 1, "rounds": reps, "methods": len(runnable)})
        shift = round_no % len(runnable)  # rotate so no method always runs right after the same neighbour
        for prepared in runnable[shift:] + runnable[:shift]:
            if timer.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(timer.device)
            seconds, output = timer.time(prepared.applied_runner, timer.calls)
            timings.times[prepared.method_id].append(seconds)
            timings.rounds[prepared.method_id].append(timings.next_round)
            timings.outputs.setdefault(prepared.method_id, []).append(output)
            if timer.device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(timer.device)
                timings.mem[prepared.method_id] = max(timings.mem.get(prepared.method_id, 0), peak)
        timings.next_round += 1


def _ratios(timings: _Timings, prepared: Prepared, baseline: Prepared) -> list[float]:
    base, mine = timings.paired(prepared, baseline)
    return [b / m for b, m in zip(base, mine, strict=False) if m > 0]


def measure(
    bundle: ModelBundle,
    workload,
    methods: Sequence[Prepared],
    node: dict,
    *,
    kind: WorkloadKind,
    device: torch.device,
    baseline: Prepared | None = None,
    reps: int = 5,
    warmup: int = 1,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[dict]:
    """Profiles every prepared method (and the kind's reference) on one task; returns profile records."""
    from executors.families import misapplied  # the family registry imports this module

    if reps < 5:
        raise ValueError("the protocol needs at least 5 timed repetitions")
    started_at, load_before = utcnow(), os.getloadavg()[0]
    harness = kind.harness
    if baseline is None:
        from executors.registry import default_config

        baseline = prepare(bundle, [default_config(kind.reference)], device)
    everyone = [baseline] + [m for m in methods if m.method_id != baseline.method_id]
    misfit = workload.fits(bundle)
    if misfit is None and bundle.family not in kind.model_families:
        misfit = (
            f"a {kind.name} workload runs on {', '.join(kind.model_families)} models; this is a {bundle.family} model"
        )
    unfit = {
        p.method_id: why
        for p in everyone[1:]
        if p.status == "ok" and (why := misapplied(p.configs, kind, bundle.family) or harness.misfit(p, workload))
    }
    runnable = [p for p in everyone if p.status == "ok" and p.method_id not in unfit] if misfit is None else []
    timings = _Timings()
    session = harness.session(bundle, workload, device, baseline, warmup) if runnable else None
    timer = _Timer(harness, session, workload, seed, device)
    for prepared in list(runnable):
        timings.times[prepared.method_id], timings.rounds[prepared.method_id] = [], []
        timings.warm[prepared.method_id] = []
        try:
            for _ in range(warmup):
                timings.warm[prepared.method_id].append(timer.time(prepared.applied_runner, 1)[0])
        except Exception as exc:  # e.g. a shape the method cannot handle: a failed record, not a dead grid
            if prepared is baseline:
                raise
            log.warning("%s failed on %s: %s", prepared.method_id, workload, exc)
            timings.failures[prepared.method_id] = error_text(exc)
            runnable.remove(prepared)
        if prepared is baseline:  # repeat short calls so a repetition outlasts the timer's noise
            steady = timer.time(baseline.applied_runner, 1)[0]
            timer.calls = max(1, math.ceil(MIN_REP_S / max(steady, 1e-6)))
    if runnable:
        _rounds(timer, runnable, reps, timings, progress)
        for _ in range(MAX_REMEASURES):
            noisy = [p for p in runnable[1:] if ratio_spread(_ratios(timings, p, baseline)) > NOISE_BOUND]
            if not noisy:
                break
            log.info(
                "re-measuring %s on %s: ratio spread above %.2f", [p.method_id for p in noisy], workload, NOISE_BOUND
            )
            if progress:
                progress("re-measuring", {"methods": [p.method_id for p in noisy]})
            _rounds(timer, [baseline] + noisy, reps, timings, progress)
            timings.remeasured |= {p.method_id for p in noisy}
    if progress and runnable:
        progress("quality", {"methods": len(runnable)})
    quality = _qualities(harness, runnable, baseline, bundle, workload, session, timings)
    context = {
        "bundle": bundle, "workload": workload, "node": node, "device": device, "harness": harness, "session": session,
        "timings": timings, "baseline": baseline, "quality": quality, "calls": timer.calls, "started_at": started_at,
        "finished_at": utcnow(), "load": (load_before, os.getloadavg()[0]), "misfit": misfit, "unfit": unfit,
    }  # fmt: skip
    return [_record(p, **context) for p in everyone]


def _qualities(harness: KindHarness, runnable: list[Prepared], baseline: Prepared, bundle: ModelBundle, workload,
               session, timings: _Timings) -> dict[str, Quality]:  # fmt: skip
    quality, outputs = {}, timings.outputs
    for prepared in runnable:
        try:
            quality[prepared.method_id] = harness.quality(prepared, baseline, bundle, workload, session, outputs)
        except Exception as exc:  # a model that cannot be scored is a failed record, not a dead task
            if prepared is baseline:
                raise
            log.warning("%s: quality failed on %s: %s", prepared.method_id, workload, exc)
            timings.failures[prepared.method_id] = f"quality: {error_text(exc)}"
    return quality


def timing_figures(prepared: Prepared, baseline: Prepared, timings: _Timings, digits: int = 6) -> tuple[dict, dict]:
    """Record fields and metrics every family derives alike from interleaved timings.

    Compile time (the first warm-up call beyond a steady call) goes into setup, never into the
    timed figures. A re-measured method's ratios pair with the reference's extra rounds.
    """
    paired_base, mine = timings.paired(prepared, baseline)
    ratios = [b / m for b, m in zip(paired_base, mine, strict=False)]
    p50 = statistics.median(mine)
    compile_s = max(0.0, timings.warm[prepared.method_id][0] - p50) if timings.warm[prepared.method_id] else 0.0
    spread = ratio_spread(ratios)
    fields = {
        "speedup": statistics.median(ratios),
        "latency_p50_s": p50,
        "latency_p10_s": quantile(mine, 0.1),
        "latency_p90_s": quantile(mine, 0.9),
        "baseline_latency_p50_s": statistics.median(paired_base),
        "setup_s": round(prepared.apply_s + compile_s, 4),
        "repeats": len(mine),
    }
    metrics = {
        "pairwise_speedups": [round(r, 4) for r in ratios],
        "latencies_s": [round(t, digits) for t in mine],
        "baseline_latencies_s": [round(t, digits) for t in paired_base],
        "apply_s": round(prepared.apply_s, 4),
        "compile_s": round(compile_s, 4),
        "warmup_s": [round(t, 4) for t in timings.warm[prepared.method_id]],
        "ratio_spread": round(spread, 4),
        "noise_bound": NOISE_BOUND,
        "remeasured": prepared.method_id in timings.remeasured or (prepared is baseline and bool(timings.remeasured)),
        "noisy": spread > NOISE_BOUND,
    }
    return fields, metrics


def record_base(prepared: Prepared, *, bundle: ModelBundle, workload, node: dict, started_at, finished_at) -> dict:
    """What every profile record carries: ids, nested rows, status and its reason."""
    model_row = bundle.spec.row()
    config = prepared.config_json
    return {
        "run_id": run_id_for(model_row["id"], workload.id, prepared.method_id, config, node["id"]),
        "model_id": model_row["id"],
        "workload_id": workload.id,
        "node_id": node["id"],
        "hardware_class": node["hardware_class"],
        "method_id": prepared.method_id,
        "config": config,
        "status": prepared.status,
        "reason": prepared.reason,
        "model": model_row,
        "workload": workload.row(),
        "node": node,
        "environment": environment(),
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "setup_s": round(prepared.apply_s, 4),
        "metrics": {},
        "repeats": 0,
    }


def _record(prepared: Prepared, *, bundle, workload, node, device, harness, session, timings, baseline, quality,
            calls, started_at, finished_at, load, misfit, unfit) -> dict:  # fmt: skip
    record = record_base(prepared, bundle=bundle, workload=workload, node=node, started_at=started_at,
                         finished_at=finished_at)  # fmt: skip
    record["environment"].update(loadavg_1m_before=round(load[0], 2), loadavg_1m_after=round(load[1], 2))
    if prepared.status != "ok":
        return record
    if misfit is not None or prepared.method_id in unfit:
        record.update(status="not-applicable", reason=misfit or unfit[prepared.method_id])
        return record
    if prepared.method_id in timings.failures:
        record.update(status="failed", reason=timings.failures[prepared.method_id])
        return record
    timing, timing_metrics = timing_figures(prepared, baseline, timings)
    items = harness.items(workload, session)
    if device.type == "cuda":
        peak, base_peak = timings.mem[prepared.method_id], timings.mem[baseline.method_id]
    else:
        peak, base_peak = (
            model_bytes(p.applied_runner.model) + harness.extra_weights(p.applied_runner)
            + harness.working_bytes(bundle, workload, timings.outputs[p.method_id])
            for p in (prepared, baseline)
        )  # fmt: skip
    figure = quality[prepared.method_id]
    record.update(
        **timing,
        throughput=items / timing["latency_p50_s"],
        baseline_throughput=items / timing["baseline_latency_p50_s"],
        peak_mem_mb=peak / 2**20,
        baseline_peak_mem_mb=base_peak / 2**20,
        quality_metric=figure.metric,
        quality_baseline=figure.baseline,
        quality_value=figure.value,
        quality_delta=figure.delta,
        metrics={
            "throughput_unit": harness.unit,
            "calls_per_repetition": calls,
            **timing_metrics,
            "quality_informative": figure.informative,
            **figure.metrics,
            "peak_mem_basis": "cuda max_memory_allocated"
            if device.type == "cuda"
            else "weights + working set (estimate)",
            "lossless": prepared.lossless,
            **harness.metrics(prepared, baseline, bundle, workload, session, timings.outputs),
        },
    )
    harness.finish_record(record, prepared, baseline, bundle, workload, session, timings.outputs)
    return record


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        # Spinning OpenMP threads make a busy machine far slower: the policy shapes the figures.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
