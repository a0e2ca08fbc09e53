"""Speculative decoding on the zoo LMs: speed-up against the baseline, acceptance, passes.

Runs the profiler harness (baseline and methods interleaved in one process, warm-up first,
median of per-round ratios) and prints one JSON object per (model, workload, method).

    python bench/executors_spec.py --models zoo:lm-8m,zoo:smollm2-135m --batch 1 --gen 32
    python bench/executors_spec.py --with-int8   # also int8 dynamic + each method
    python bench/executors_spec.py --verify-cost  # verify forward vs one decode step, per model

Models load through the zoo (built on first use: SmolLM2 converts from its pip package).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time

import torch

import executors.methods  # noqa: F401  (registers every method)
from executors.families import measure
from executors.families.lm.workloads import LMWorkload
from executors.methods.spec.engine import TokenTree
from executors.protocol import prepare
from executors.registry import default_config
from executors.zoo import load_bundle

SPEC_METHODS = ("lm.spec.swift", "lm.spec.medusa", "lm.parallel.jacobi")
KEPT = (
    "speedup",
    "latency_p50_s",
    "baseline_latency_p50_s",
    "setup_s",
    "acceptance_rate",
    "mean_accepted_len",
    "full_passes",
    "draft_passes",
    "verify_steps",
    "forwards_per_token",
    "greedy_token_match",
    "skip_layers",
    "search_trials",
    "head_top1_accuracy",
    "tree_nodes",
    "heads_cached",
    "warmup_s",
    "pairwise_speedups",
)


def summary(record: dict) -> dict:
    merged = {**record, **record.get("metrics", {})}
    out = {
        "model": record["model_id"],
        "workload": record["workload"],
        "method": record["method_id"],
        "status": record["status"],
    }
    if record["status"] != "ok":
        return {**out, "reason": record["reason"]}
    return {**out, **{k: merged[k] for k in KEPT if k in merged}}


def verify_cost(bundle, context: int = 64, rounds: int = 7) -> dict:
    """Median cost of a 5-token chain, a 13-node tree and a half-layer draft step, in decode steps."""
    model = bundle.model
    tokens = torch.randint(model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
    tree = TokenTree((-1, 0, 0, 0, 1, 1, 2, 4, 4, 5, 7, 8, 9))
    every_other = frozenset(range(1, model.config.n_layers, 2))
    shapes = {
        "step": lambda cache: model(tokens[:, :1], cache),
        "chain5": lambda cache: model(tokens[:, :5], cache),
        "tree13": lambda cache: model(
            tokens[:, :13], cache, tree_mask=tree.attention_mask(), positions=cache.length + torch.tensor(tree.depths())
        ),
        "half_layer_step": lambda cache: model(tokens[:, :1], cache, skip_layers=every_other),
    }
    cache = model.new_cache(1, context + 16)
    model(tokens, cache)
    seconds: dict[str, list[float]] = {name: [] for name in shapes}
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        for name, run in shapes.items():
            began = time.perf_counter()
            for _ in range(5):
                cache.crop(context)
                run(cache)
            seconds[name].append((time.perf_counter() - began) / 5)
    median = {name: statistics.median(values[1:]) for name, values in seconds.items()}
    return {
        "step_ms": round(median["step"] * 1e3, 2),
        **{f"{name}_x": round(median[name] / median["step"], 2) for name in shapes if name != "step"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="zoo:lm-8m,zoo:smollm2-135m")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--gen", type=int, default=48)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--methods", default=",".join(SPEC_METHODS))
    parser.add_argument("--with-int8", action="store_true", help="also quant.int8_dynamic + each method")
    parser.add_argument("--verify-cost", action="store_true", help="only time verify forwards vs a step")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    node = {"id": f"bench-cpu-t{args.threads}", "hardware_class": f"bench-cpu-t{args.threads}"}
    workload = LMWorkload(batch_size=args.batch, prompt_len=args.prompt, gen_len=args.gen)
    chains = [[m] for m in args.methods.split(",")]
    if args.with_int8:
        chains += [["quant.int8_dynamic"]] + [["quant.int8_dynamic", m] for m in args.methods.split(",")]
    for source in args.models.split(","):
        bundle = load_bundle(source)
        if args.verify_cost:
            with torch.inference_mode():
                print(json.dumps({"model": source, "threads": args.threads, **verify_cost(bundle)}), flush=True)
            continue
        with torch.inference_mode(False):
            prepared = [prepare(bundle, [default_config(m) for m in chain], device) for chain in chains]
        with torch.inference_mode():
            records = measure(bundle, workload, prepared, node, device=device, reps=args.reps)
        for record in records:
            if record["method_id"] != "baseline":
                print(json.dumps({**summary(record), "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
