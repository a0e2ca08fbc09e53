"""The profiler harness for encoders: the LM harness's protocol over an embed workload.

Methods are prepared exactly as for LMs (`harness.prepare`: `supports()` reasons, apply time
as setup); a runner's `.model` is the transformed encoder and a call embeds one batch. Baseline
and methods run interleaved round by round on the same inputs after a warm-up; a timed
repetition repeats the call enough times to last ≥ `MIN_REP_S` (one small batch takes
milliseconds, below the timer noise of a loaded machine), and the latency is per call.
Quality is measured once per prepared model on the local retrieval set: mean cosine of every
embedding to the unmodified encoder's, and recall@k of the transformed encoder on its own.
Records have the LM harness's shape, so the store, the export and the advisor take them as is.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Sequence

import torch

from executors.encoder_workloads import (
    EmbedWorkload,
    RetrievalEmbeddings,
    embed_inputs,
    embedding_quality,
    retrieval_embeddings,
    retrieval_set,
)
from executors.harness import (
    Prepared,
    _core,
    _error,
    model_bytes,
    record_base,
    task_cast,
    timing_figures,
)
from executors.registry import ModelBundle
from profiles.models import utcnow

MIN_REP_S = 0.05
_REFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # unmodified encoder → its embeddings


def activation_bytes(bundle: ModelBundle, workload: EmbedWorkload) -> int:
    """fp32 working set of one layer: FFN hidden + q/k/v/out, and the T×T attention scores."""
    config, tokens = bundle.model.config, workload.batch_size * workload.seq_len
    scores = workload.batch_size * config.n_heads * workload.seq_len**2
    return 4 * (tokens * (config.ffn_dim + 4 * config.dim) + scores)


def _reference(bundle: ModelBundle, baseline: Prepared) -> RetrievalEmbeddings:
    model = _core(baseline.runner.model)
    if model not in _REFERENCE:
        _REFERENCE[model] = retrieval_embeddings(model, bundle)
    return _REFERENCE[model]


def ensure_embedding_quality(prepared: Prepared, bundle: ModelBundle, baseline: Prepared) -> None:
    """Fills prepared.quality once per prepared model (the retrieval set takes seconds to embed)."""
    if "embedding_cosine" in prepared.quality or prepared.runner is None:
        return
    reference = _reference(bundle, baseline)
    if _core(prepared.runner.model) is _core(baseline.runner.model):
        mine, prepared.quality["quality_basis"] = reference, "same weights as the baseline"
    else:
        mine = retrieval_embeddings(prepared.runner.model, bundle)
        prepared.quality["quality_basis"] = "retrieval set embedded by the transformed encoder"
    prepared.quality.update(embedding_quality(mine, reference))


def _timed(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, calls: int) -> float:
    if ids.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(calls):
            model(ids, mask)
    if ids.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def measure_encoder(
    bundle: ModelBundle,
    workload: EmbedWorkload,
    methods: Sequence[Prepared],
    node: dict,
    *,
    device: torch.device,
    reps: int = 5,
    warmup: int = 1,
    seed: int = 0,
    baseline: Prepared | None = None,
) -> list[dict]:
    """Profiles every prepared method (and the baseline) on one embed task; returns profile records.

    `seed` is accepted for the LM harness's signature: embedding has no sampling.
    """
    started_at = utcnow()
    baseline, everyone, misfit, runnable = task_cast(bundle, workload, methods, device, reps, baseline)
    times: dict[str, list[float]] = {p.method_id: [] for p in runnable}
    warm: dict[str, list[float]] = {p.method_id: [] for p in runnable}
    failures: dict[str, str] = {}
    calls = 1
    if runnable:
        ids, mask = (t.to(device) for t in embed_inputs(bundle, workload))
    for prepared in list(runnable):
        try:
            for _ in range(warmup):
                warm[prepared.method_id].append(_timed(prepared.runner.model, ids, mask, 1))
        except Exception as exc:  # a method that breaks on this shape is a failed record
            if prepared is baseline:
                raise
            failures[prepared.method_id] = _error(exc)
            runnable.remove(prepared)
        if prepared is baseline:
            steady = _timed(baseline.runner.model, ids, mask, 1)
            calls = max(1, math.ceil(MIN_REP_S / max(steady, 1e-6)))
    for round_no in range(reps if runnable else 0):
        shift = round_no % len(runnable)  # rotate so no method always follows the same neighbour
        for prepared in runnable[shift:] + runnable[:shift]:
            times[prepared.method_id].append(_timed(prepared.runner.model, ids, mask, calls))
    for prepared in runnable:
        ensure_embedding_quality(prepared, bundle, baseline)
    context = dict(
        bundle=bundle,
        workload=workload,
        node=node,
        times=times,
        warm=warm,
        calls=calls,
        baseline=baseline,
        started_at=started_at,
        finished_at=utcnow(),
        misfit=misfit,
        failures=failures,
    )
    return [_record(p, **context) for p in everyone]


def _record(
    prepared: Prepared,
    *,
    bundle,
    workload,
    node,
    times,
    warm,
    calls,
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
    timing, timing_metrics = timing_figures(prepared, baseline, times, warm, digits=6)
    p50, base_p50 = timing["latency_p50_s"], timing["baseline_latency_p50_s"]
    activations = activation_bytes(bundle, workload)
    quality, base_quality = prepared.quality, baseline.quality
    retrieval = retrieval_set()
    recall = {k: v for k, v in quality.items() if k.startswith("recall_at_")}
    record.update(
        **timing,
        throughput=workload.batch_size / p50,
        baseline_throughput=workload.batch_size / base_p50,
        peak_mem_mb=(model_bytes(prepared.runner.model) + activations) / 2**20,
        baseline_peak_mem_mb=(model_bytes(baseline.runner.model) + activations) / 2**20,
        quality_metric="embedding_cosine",
        quality_baseline=1.0,
        quality_value=quality["embedding_cosine"],
        quality_delta=quality["embedding_cosine"] - 1.0,
        metrics={
            "throughput_unit": "seq/s",
            "tokens_per_s": workload.batch_size * workload.seq_len / p50,
            "calls_per_repetition": calls,
            **timing_metrics,
            "embedding_cosine_min": quality["embedding_cosine_min"],
            **recall,
            **{f"baseline_{k}": base_quality[k] for k in recall},
            **{f"{k}_delta": v - base_quality[k] for k, v in recall.items()},
            "quality_basis": quality["quality_basis"],
            "retrieval_set": "pydoc-topics-headings",
            "retrieval_set_sha256": retrieval.sha256,
            "retrieval_queries": len(retrieval.queries),
            "peak_mem_basis": "weights + one layer's fp32 activations (estimate)",
            "lossless": prepared.lossless,
            **getattr(prepared.runner, "stats", {}),
        },
    )
    return record
