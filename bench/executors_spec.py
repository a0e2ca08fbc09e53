"""Speculative decoding on the zoo LMs: speed-up against the baseline, acceptance, passes.

Runs the profiler harness (baseline and methods interleaved in one process, warm-up first,
median of per-round ratios) and prints one JSON object per (model, workload, method).

    python bench/executors_spec.py --models zoo:lm-8m,zoo:smollm2-135m --batch 1 --gen 32
    python bench/executors_spec.py --with-int8   # also int8 dynamic + each method

Models load through the zoo (built on first use: SmolLM2 converts from its pip package).
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

import executors.methods  # noqa: F401  (registers every method)
from executors.harness import measure, prepare
from executors.registry import default_config
from executors.workloads import LMWorkload
from executors.zoo import load_bundle

SPEC_METHODS = ("lm.spec.swift", "lm.spec.medusa", "lm.parallel.jacobi")
KEPT = ("speedup", "latency_p50_s", "baseline_latency_p50_s", "setup_s", "acceptance_rate",
        "mean_accepted_len", "full_passes", "draft_passes", "verify_steps", "forwards_per_token",
        "greedy_token_match", "skip_layers", "search_trials", "head_top1_accuracy", "tree_nodes",
        "heads_cached", "warmup_s", "pairwise_speedups")


def summary(record: dict) -> dict:
    merged = {**record, **record.get("metrics", {})}
    out = {"model": record["model_id"], "workload": record["workload"], "method": record["method_id"],
           "status": record["status"]}
    if record["status"] != "ok":
        return {**out, "reason": record["reason"]}
    return {**out, **{k: merged[k] for k in KEPT if k in merged}}


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
        with torch.inference_mode(False):
            prepared = [prepare(bundle, [default_config(m) for m in chain], device, None) for chain in chains]
        with torch.inference_mode():
            records = measure(bundle, workload, prepared, node, device=device, reps=args.reps)
        for record in records:
            if record["method_id"] != "baseline":
                print(json.dumps({**summary(record), "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
