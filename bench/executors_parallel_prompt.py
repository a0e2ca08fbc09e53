"""Parallel prompt decoding on the zoo LMs: speed-up, accepted length, setup time, chosen tree.

Runs the profiler harness (baseline and methods interleaved in one process, warm-up first,
median of per-round ratios) and prints one JSON object per (model, method chain).

    python bench/executors_parallel_prompt.py --models zoo:lm-1m,zoo:lm-8m --threads 1
    python bench/executors_parallel_prompt.py --with-int8   # also int8 dynamic (+ PPD on top)
    python bench/executors_parallel_prompt.py --budgets 4,8,16   # fixed tree budgets side by side
    python bench/executors_parallel_prompt.py --ensemble 2   # ensemble prompt tokens (EPT)

The first run on a model trains its prompt tokens (setup_s); later runs load them from the cache.
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

import executors.methods  # noqa: F401  (registers every method)
from executors.families import measure
from executors.families.lm.workloads import LMWorkload
from executors.methods.spec.parallel_prompt import ParallelPromptConfig
from executors.protocol import prepare
from executors.registry import MethodConfig, default_config
from executors.zoo import load_bundle

KEPT = (
    "speedup",
    "latency_p50_s",
    "baseline_latency_p50_s",
    "setup_s",
    "acceptance_rate",
    "mean_accepted_len",
    "full_passes",
    "verify_steps",
    "greedy_token_match",
    "prompt_top1_accuracy",
    "tree_budget",
    "tree_sizes",
    "tree_candidates",
    "expected_tokens_per_step",
    "verify_cost",
    "prompts_cached",
    "pairwise_speedups",
)


def summary(record: dict) -> dict:
    merged = {**record, **record.get("metrics", {})}
    out = {
        "model": record["model_id"],
        "workload": record["workload"],
        "method": record["method_id"],
        "config": record.get("config"),
        "status": record["status"],
    }
    if record["status"] != "ok":
        return {**out, "reason": record.get("reason")}
    return {**out, **{k: merged[k] for k in KEPT if k in merged}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="zoo:lm-1m,zoo:lm-8m")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--gen", type=int, default=48)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--budgets", default="", help="fixed tree budgets to compare (default: the probe's)")
    parser.add_argument("--ensemble", type=int, default=1, help="virtual tokens per prompt token (EPT)")
    parser.add_argument("--with-int8", action="store_true", help="also quant.int8_dynamic and int8 + PPD")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    node = {"id": f"bench-cpu-t{args.threads}", "hardware_class": f"bench-cpu-t{args.threads}"}
    workload = LMWorkload(batch_size=args.batch, prompt_len=args.prompt, gen_len=args.gen)
    budgets = [int(b) for b in args.budgets.split(",") if b] or [0]
    chains: list[list[MethodConfig]] = [[ParallelPromptConfig(tree_budget=b, ensemble=args.ensemble)] for b in budgets]
    if args.with_int8:
        int8 = default_config("quant.int8_dynamic")
        chains += [[int8], [int8, ParallelPromptConfig(ensemble=args.ensemble)]]
    for source in args.models.split(","):
        bundle = load_bundle(source)
        for chain in chains:  # one measurement each: records are keyed by method id
            with torch.inference_mode(False):
                prepared = prepare(bundle, chain, device)
            with torch.inference_mode():
                records = measure(bundle, workload, [prepared], node, device=device, reps=args.reps)
            for record in records:
                if record["method_id"] != "baseline":
                    print(json.dumps({**summary(record), "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
