"""Double Sparsity vs dense attention at long context: prints JSON, one object per context length.

Per context length (default 1k, 2k, 4k, 8k), in one process and interleaved round by round:
- attention time of one decode step in one layer: dense SDPA over the whole KV cache vs the
  Double Sparsity op (label-cache scores, top-k, attention over the kept tokens) on the real
  keys/values the prefill produced;
- decode time per token of the whole model (prefill excluded), baseline vs Double Sparsity;
- quality of both on the long-context workload: retrieval accuracy and held-out perplexity.

Usage: OMP_WAIT_POLICY=PASSIVE python bench/executors_double_sparsity.py [--model zoo:lm-1m-long]
       [--contexts 1024,2048,4096,8192] [--threads 1] [--reps 9] [--probes 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import executors.methods  # noqa: F401  (registers every method)
from accel_kernels import dispatch
from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.workloads import perplexity
from executors.families.longctx.workload import (
    LongContextWorkload,
    long_windows,
    retrieval_accuracy,
    retrieval_probes,
    timed_prompts,
)
from executors.methods.attn.double_sparsity import DoubleSparsityConfig, token_budget
from executors.registry import get_method
from executors.zoo import load_bundle


def _median_interleaved(functions: dict, reps: int) -> dict:
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_no in range(reps):
        names = list(functions)
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(functions[name]())
    return {name: statistics.median(values) for name, values in times.items()}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _decode_step_timer(model, prompt: torch.Tensor, steps: int):
    """Prefill once; each call rolls the cache back and times `steps` greedy decode steps."""
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + steps)
    with torch.inference_mode():
        first = model(prompt, cache)[:, -1].argmax(-1, keepdim=True)
    length = cache.length

    @torch.inference_mode()
    def run() -> float:
        cache.crop(length)
        token = first
        start = time.perf_counter()
        for _ in range(steps):
            token = model(token, cache)[:, -1].argmax(-1, keepdim=True)
        return (time.perf_counter() - start) / steps

    return run, cache


def _quality(bundle, model: torch.nn.Module, workload: LongContextWorkload) -> dict:
    """Passkey retrieval and held-out perplexity at this context, through the given model."""
    probes = retrieval_probes(bundle, workload.probes, workload.prompt_len)
    scores = retrieval_accuracy(model, probes, workload.batch_size)
    windows = long_windows(bundle, workload.ppl_windows, workload.prompt_len + 1)
    return {**scores, "longctx_perplexity": perplexity(model, windows, batch=1)}


def bench_context(
    bundle, runner, config: DoubleSparsityConfig, context: int, reps: int, probes: int, steps: int
) -> dict:
    workload = LongContextWorkload(prompt_len=context, probes=probes, ppl_windows=1)
    prompt = timed_prompts(bundle, workload)
    sparse_model = runner.model
    dense_step, _ = _decode_step_timer(bundle.model, prompt, steps)
    sparse_step, cache = _decode_step_timer(sparse_model, prompt, steps)
    layer = len(cache.keys) - 1
    keys, values, labels = cache.keys[layer], cache.values[layer], cache.labels[layer]
    c = bundle.model.config
    q = torch.randn(prompt.shape[0], c.n_heads, c.head_dim, generator=torch.Generator().manual_seed(0))
    seq_lens = torch.full((prompt.shape[0],), context, dtype=torch.int32)
    budget = token_budget(config, context)
    channels = sparse_model.channels[layer]

    def dense_attention():
        return _timed(
            lambda: F.scaled_dot_product_attention(
                q[:, :, None], keys[:, :, :context], values[:, :, :context], enable_gqa=c.n_heads != c.n_kv_heads
            )
        )

    def sparse_attention():
        return _timed(lambda: dispatch.double_sparsity_decode(q, keys, values, labels, channels, budget, seq_lens))

    attention = _median_interleaved({"dense": dense_attention, "double_sparsity": sparse_attention}, reps * 5)
    decode = _median_interleaved({"dense": dense_step, "double_sparsity": sparse_step}, reps)
    quality = {
        "dense": _quality(bundle, bundle.model, workload),
        "double_sparsity": _quality(bundle, runner.model, workload),
    }
    return {
        "context": context,
        "token_budget": budget,
        "label_channels": len(channels[0]),
        "attention_ms": {k: round(v * 1e3, 4) for k, v in attention.items()},
        "attention_speedup": round(attention["dense"] / attention["double_sparsity"], 3),
        "decode_ms_per_token": {k: round(v * 1e3, 3) for k, v in decode.items()},
        "decode_speedup": round(decode["dense"] / decode["double_sparsity"], 3),
        "retrieval_accuracy": {k: v["retrieval_accuracy"] for k, v in quality.items()},
        "longctx_perplexity": {k: round(v["longctx_perplexity"], 4) for k, v in quality.items()},
        "probes": probes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:lm-1m-long")
    parser.add_argument("--contexts", default="1024,2048,4096,8192")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--decode-steps", type=int, default=8)
    parser.add_argument("--config", default="{}", help="Double Sparsity params as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model)
    config = DoubleSparsityConfig(**json.loads(args.config))
    started = time.perf_counter()
    runner = get_method("attn.double_sparsity").apply(bundle, config)
    if not isinstance(runner, PlainDecoder):
        raise TypeError(f"attn.double_sparsity returned a {type(runner).__name__}; this bench reads PlainDecoder.stats")
    header = {
        "model": args.model,
        "threads": args.threads,
        "config": json.loads(args.config) or "defaults",
        "calibration_s": round(time.perf_counter() - started, 3),
        "kernel_backend": runner.stats["kernel_backend"],
        "torch": torch.__version__,
    }
    print(json.dumps(header), flush=True)
    for context in (int(c) for c in args.contexts.split(",")):
        print(
            json.dumps(bench_context(bundle, runner, config, context, args.reps, args.probes, args.decode_steps)),
            flush=True,
        )


if __name__ == "__main__":
    main()
