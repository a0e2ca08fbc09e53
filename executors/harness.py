"""The profiler harness (DESIGN.md §6): baseline and methods interleaved in one process.

Per task (model × workload × node) every prepared method and the baseline run round by
round on the same prompts after a warm-up, so one baseline serves all methods and machine
noise hits them alike; the speed-up is the median of the per-round baseline/method ratios.
Setup (apply, calibration, compilation = the first call's excess over steady state) is kept
apart from steady state. Memory on CPU is the resident weights plus the KV cache the workload
needs (RSS high-water marks cannot separate runners sharing one process); on CUDA it is
`torch.cuda.max_memory_allocated` over the method's timed runs.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from executors.longctx import LongContextWorkload
from executors.registry import (
    MethodConfig,
    ModelBundle,
    Runner,
    apply_composite,
    composite_id,
    config_to_json,
    default_config,
    method_of,
)
from executors.workloads import LMWorkload, heldout_prompts, heldout_windows, perplexity
from profiles.models import run_id_for, utcnow

log = logging.getLogger(__name__)

BASELINE_ID = "baseline"
PPL_WINDOWS, PPL_LENGTH = 8, 257


@dataclass
class Prepared:
    """One method (or composite) applied to one model: a runner, or why there is none."""

    configs: tuple[MethodConfig, ...]
    runner: Runner | None = None
    status: str = "ok"  # ok, failed, not-applicable
    reason: str | None = None
    apply_s: float = 0.0
    quality: dict = field(default_factory=dict)  # held-out perplexity, computed once per model

    @property
    def method_id(self) -> str:
        return composite_id(self.configs)

    @property
    def config_json(self) -> dict:
        if len(self.configs) == 1:
            return config_to_json(self.configs[0])
        return {"method": self.method_id, "steps": [config_to_json(c) for c in self.configs]}

    @property
    def lossless(self) -> bool:
        return all(method_of(c).lossless for c in self.configs)


def calibration_batch(bundle: ModelBundle, count: int = 8, length: int = 128) -> torch.Tensor:
    """Training-split token windows (never the held-out text the quality is measured on)."""
    rows = []
    for text in bundle.calibration_texts[:: max(1, len(bundle.calibration_texts) // count)]:
        tokens = bundle.tokenizer.encode(text)
        if len(tokens) >= length:
            rows.append(tokens[:length])
        if len(rows) == count:
            break
    return torch.tensor(rows, dtype=torch.long)


def prepare(
    bundle: ModelBundle, configs: Sequence[MethodConfig], device: torch.device, calibration: torch.Tensor | None
) -> Prepared:
    prepared = Prepared(tuple(configs))
    for config in prepared.configs:
        reason = method_of(config).supports(bundle, device)
        if reason:
            prepared.status, prepared.reason = "not-applicable", f"{method_of(config).id}: {reason}"
            return prepared
    started = time.perf_counter()
    try:
        prepared.runner = apply_composite(bundle, prepared.configs, calibration)
    except Exception as exc:  # a broken method is a failed record, not a crashed grid
        log.warning("%s failed to apply: %s", prepared.method_id, exc)
        prepared.status, prepared.reason = "failed", _error(exc)
    prepared.apply_s = time.perf_counter() - started
    return prepared


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1500] + "\n" + "".join(traceback.format_tb(exc.__traceback__)[-2:])[:400]


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


def kv_cache_bytes(bundle: ModelBundle, workload: LMWorkload) -> int:
    c = bundle.model.config
    return (
        2 * c.n_layers * workload.batch_size * c.n_kv_heads * (workload.prompt_len + workload.gen_len) * c.head_dim * 4
    )


def _timed_generate(runner: Runner, prompts: torch.Tensor, workload: LMWorkload, seed: int):
    if prompts.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    generation = runner.generate(
        prompts, workload.gen_len, sampling=workload.sampling, temperature=workload.temperature, seed=seed
    )
    if prompts.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, generation


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _core(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wraps the module it compiles


def _ensure_quality(prepared: Prepared, bundle: ModelBundle, baseline: Prepared) -> None:
    if "heldout_perplexity" in prepared.quality or prepared.runner is None:
        return
    model = _core(prepared.runner.model)
    if model is _core(baseline.runner.model) and "heldout_perplexity" in baseline.quality:
        prepared.quality["heldout_perplexity"] = baseline.quality["heldout_perplexity"]  # same weights
        return
    length = min(PPL_LENGTH, bundle.model.config.max_seq_len)
    prepared.quality["heldout_perplexity"] = perplexity(model, heldout_windows(bundle, PPL_WINDOWS, length))


def task_cast(
    bundle: ModelBundle,
    workload,
    methods: Sequence[Prepared],
    device: torch.device,
    reps: int,
    baseline: Prepared | None,
) -> tuple[Prepared, list[Prepared], str | None, list[Prepared]]:
    """How every harness opens a task: (baseline, everyone with the baseline first, why the workload
    does not fit the model or None, who runs). A misfit runs nobody; a method that failed to apply
    does not run."""
    if reps < 5:
        raise ValueError("the protocol needs at least 5 timed repetitions")
    baseline = baseline or prepare(bundle, [default_config(BASELINE_ID)], device, None)
    everyone = [baseline] + [m for m in methods if m.method_id != BASELINE_ID]
    misfit = workload.fits(bundle)
    return baseline, everyone, misfit, [p for p in everyone if p.status == "ok"] if misfit is None else []


def measure(
    bundle: ModelBundle,
    workload: LMWorkload,
    methods: Sequence[Prepared],
    node: dict,
    *,
    device: torch.device,
    reps: int = 5,
    warmup: int = 1,
    seed: int = 0,
    baseline: Prepared | None = None,
) -> list[dict]:
    """Profiles every prepared method (and the baseline) on one task; returns profile records."""
    started_at = utcnow()
    baseline, everyone, misfit, runnable = task_cast(bundle, workload, methods, device, reps, baseline)
    prompts = _timed_prompts(bundle, workload).to(device) if runnable else None
    times: dict[str, list[float]] = {p.method_id: [] for p in runnable}
    warm: dict[str, list[float]] = {p.method_id: [] for p in runnable}
    outputs, mem = {}, {}
    failures: dict[str, str] = {}
    for prepared in list(runnable):
        try:
            for _ in range(warmup):
                warm[prepared.method_id].append(_timed_generate(prepared.runner, prompts, workload, seed)[0])
        except Exception as exc:  # e.g. a shape the method cannot handle: a failed record, not a dead grid
            if prepared is baseline:
                raise
            log.warning("%s failed on %s: %s", prepared.method_id, workload, exc)
            failures[prepared.method_id] = _error(exc)
            runnable.remove(prepared)
    for round_no in range(reps if runnable else 0):
        # Rotate the order each round so no method always runs right after the same neighbour.
        shift = round_no % len(runnable)
        for prepared in runnable[shift:] + runnable[:shift]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, generation = _timed_generate(prepared.runner, prompts, workload, seed)
            times[prepared.method_id].append(seconds)
            outputs[prepared.method_id] = generation
            if device.type == "cuda":
                mem[prepared.method_id] = max(mem.get(prepared.method_id, 0), torch.cuda.max_memory_allocated(device))
    for prepared in runnable:  # the baseline comes first, so methods sharing its weights reuse its figure
        _ensure_quality(prepared, bundle, baseline)
    task_quality = (
        {p.method_id: workload.quality(bundle, p.runner) for p in runnable}
        if isinstance(workload, LongContextWorkload)
        else {}
    )
    finished_at = utcnow()
    context = dict(
        bundle=bundle,
        workload=workload,
        node=node,
        device=device,
        times=times,
        warm=warm,
        outputs=outputs,
        mem=mem,
        baseline=baseline,
        started_at=started_at,
        finished_at=finished_at,
        misfit=misfit,
        failures=failures,
    )
    records = [_record(p, **context) for p in everyone]
    _add_task_quality(records, task_quality, baseline.method_id)
    return records


def _timed_prompts(bundle: ModelBundle, workload) -> torch.Tensor:
    if isinstance(workload, LongContextWorkload):  # retrieval prompts it builds itself
        return workload.prompts(bundle)
    return heldout_prompts(bundle, workload.batch_size, workload.prompt_len)


def _add_task_quality(records: list[dict], task_quality: dict, baseline_id: str) -> None:
    """Long-context retrieval: accuracy is the quality; perplexity at that context goes beside it."""
    base = task_quality.get(baseline_id)
    for record in records:
        mine = task_quality.get(record["method_id"])
        if record["status"] != "ok" or mine is None or base is None:
            continue
        record.update(
            quality_metric="retrieval_accuracy",
            quality_baseline=base["retrieval_accuracy"],
            quality_value=mine["retrieval_accuracy"],
            quality_delta=mine["retrieval_accuracy"] - base["retrieval_accuracy"],
        )
        record["metrics"].update(mine, **{f"baseline_{key}": value for key, value in base.items()})


def record_base(prepared: Prepared, *, bundle, workload, node, started_at, finished_at, misfit, failures) -> dict:
    """What every profile record carries (any harness): ids, nested rows, status and its reason."""
    model_row = model_row_of(bundle)
    config = prepared.config_json
    record = {
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
    if misfit is not None and prepared.status == "ok":
        record.update(status="not-applicable", reason=misfit)
    elif prepared.method_id in failures:
        record.update(status="failed", reason=failures[prepared.method_id])
    return record


def timing_figures(prepared: Prepared, baseline: Prepared, times: dict, warm: dict, digits: int) -> tuple[dict, dict]:
    """What every harness derives alike from interleaved timings: record fields and metrics.

    The speed-up is the median of the per-round ratios; compile time (the first warm-up call
    beyond a steady call) goes into setup, never into the timed figures.
    """
    mine, base = times[prepared.method_id], times[baseline.method_id]
    ratios = [b / m for b, m in zip(base, mine)]
    p50 = statistics.median(mine)
    compile_s = max(0.0, warm[prepared.method_id][0] - p50)
    fields = {
        "speedup": statistics.median(ratios),
        "latency_p50_s": p50,
        "latency_p10_s": _quantile(mine, 0.1),
        "latency_p90_s": _quantile(mine, 0.9),
        "baseline_latency_p50_s": statistics.median(base),
        "setup_s": round(prepared.apply_s + compile_s, 4),
        "repeats": len(mine),
    }
    metrics = {
        "pairwise_speedups": [round(r, 4) for r in ratios],
        "latencies_s": [round(t, digits) for t in mine],
        "baseline_latencies_s": [round(t, digits) for t in base],
        "apply_s": round(prepared.apply_s, 4),
        "compile_s": round(compile_s, 4),
        "warmup_s": [round(t, 4) for t in warm[prepared.method_id]],
    }
    return fields, metrics


def _record(
    prepared: Prepared,
    *,
    bundle,
    workload,
    node,
    device,
    times,
    warm,
    outputs,
    mem,
    baseline,
    started_at,
    finished_at,
    misfit,
    failures,
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
    timing, timing_metrics = timing_figures(prepared, baseline, times, warm, digits=5)
    p50, base_p50 = timing["latency_p50_s"], timing["baseline_latency_p50_s"]
    generation, base_generation = outputs[prepared.method_id], outputs[baseline.method_id]
    tokens = workload.batch_size * workload.gen_len
    match = (generation.tokens.cpu() == base_generation.tokens.cpu()).float()
    kv = kv_cache_bytes(bundle, workload)
    if device.type == "cuda":
        peak, base_peak = mem[prepared.method_id], mem[baseline.method_id]
    else:
        peak = model_bytes(prepared.runner.model) + kv
        peak += sum(model_bytes(m) for m in getattr(prepared.runner, "extra_modules", ()))
        base_peak = model_bytes(baseline.runner.model) + kv
    ppl, base_ppl = prepared.quality["heldout_perplexity"], baseline.quality["heldout_perplexity"]
    greedy = workload.sampling == "greedy"
    if prepared.lossless and greedy:
        quality = ("greedy_token_match", 1.0, match.mean().item())
        delta = quality[2] - 1.0
    else:
        quality = ("heldout_perplexity", base_ppl, ppl)
        delta = (base_ppl - ppl) / base_ppl  # relative; negative means worse
    record.update(
        **timing,
        throughput=tokens / p50,
        baseline_throughput=tokens / base_p50,
        peak_mem_mb=peak / 2**20,
        baseline_peak_mem_mb=base_peak / 2**20,
        quality_metric=quality[0],
        quality_baseline=quality[1],
        quality_value=quality[2],
        quality_delta=delta,
        metrics={
            "throughput_unit": "tok/s",
            **timing_metrics,
            "greedy_token_match": match.mean().item() if greedy else None,
            "exact_sequence_match": match.all(dim=1).float().mean().item() if greedy else None,
            "heldout_perplexity": ppl,
            "baseline_heldout_perplexity": base_ppl,
            "forward_passes": generation.forward_passes,
            "forwards_per_token": generation.forward_passes / workload.gen_len,
            "peak_mem_basis": "cuda max_memory_allocated" if device.type == "cuda" else "weights + kv cache",
            "lossless": prepared.lossless,
            **generation.stats,
        },
    )
    return record


def model_row_of(bundle: ModelBundle) -> dict:
    spec = bundle.spec
    return {
        "id": spec["source"],
        "family": spec.get("family", "decoder-lm"),
        "params": spec["params"],
        "layers": spec["layers"],
        "width": spec["dim"],
        "heads": spec["heads"],
        "kv_heads": spec["kv_heads"],
        "vocab": spec["vocab"],
        "context": spec["context"],
        "source": spec["source"],
        "descriptors": spec,
    }


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
