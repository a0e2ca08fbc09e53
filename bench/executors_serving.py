"""Serving methods on request streams: throughput, TTFT and inter-token latency vs static batching.

Runs the stream profiler (static batching and every method interleaved round by round on the
same seeded request stream, warm-up first) at a low and a high offered load, and prints one
JSON object per (model, threads, load, max batch, method), then one `winners` object per
(model, threads, load, max batch): the best method for throughput and for TTFT p50, so the
MetaInf question "does the winner flip with batch size and hardware?" reads off the output.

    OMP_WAIT_POLICY=PASSIVE python bench/executors_serving.py --models zoo:lm-1m,zoo:lm-8m --threads 1,2
    python bench/executors_serving.py --loads 0.5,4 --batches 4,8 --requests 16

Load is relative: arrivals per second = load × what static batching serves per second on this
model and thread count when every request arrives at once (measured in the warm-up).
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

import executors.methods  # noqa: F401  (registers every method)
from executors.families import measure
from executors.families.stream.workload import StreamWorkload
from executors.protocol import prepare
from executors.registry import default_config
from executors.zoo import load_bundle

METHODS = (
    "serve.continuous_batching",
    "serve.prefix_caching",
    "serve.chunked_prefill",
    "serve.prefix_caching+serve.chunked_prefill",
    "serve.continuous_batching+serve.prefix_caching",
    "serve.continuous_batching+serve.chunked_prefill",
    "serve.continuous_batching+serve.prefix_caching+serve.chunked_prefill",
)
KEPT = (
    "ttft_p50_s",
    "ttft_p99_s",
    "itl_p50_s",
    "itl_p99_s",
    "baseline_ttft_p50_s",
    "baseline_ttft_p99_s",
    "baseline_itl_p50_s",
    "baseline_itl_p99_s",
    "ttft_p50_speedup",
    "arrival_rate_rps",
    "static_capacity_rps",
    "greedy_token_match",
    "prefill_tokens_computed",
    "prompt_tokens",
    "prefill_chunks",
    "midflight_admissions",
    "iterations",
    "pairwise_speedups",
)


def summary(record: dict, threads: int, workload: StreamWorkload) -> dict:
    out = {
        "model": record["model_id"],
        "threads": threads,
        "load": workload.load,
        "max_batch": workload.max_batch,
        "method": record["method_id"],
        "status": record["status"],
    }
    if record["status"] != "ok":
        return {**out, "reason": record["reason"]}
    metrics = record["metrics"]
    return {
        **out,
        "throughput_speedup": round(record["speedup"], 4),
        "throughput_tok_s": round(record["throughput"], 2),
        "baseline_throughput_tok_s": round(record["baseline_throughput"], 2),
        **{k: (round(metrics[k], 5) if isinstance(metrics[k], float) else metrics[k]) for k in KEPT},
    }


def winners(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok" and r["greedy_token_match"] == 1.0]  # static batching included
    first = rows[0]
    return {
        "winners": True,
        "model": first["model"],
        "threads": first["threads"],
        "load": first["load"],
        "max_batch": first["max_batch"],
        "throughput": max(ok, key=lambda r: r["throughput_speedup"])["method"],
        "ttft_p50": min(ok, key=lambda r: r["ttft_p50_s"])["method"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="zoo:lm-1m,zoo:lm-8m")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--loads", default="0.5,4")
    parser.add_argument("--batches", default="4")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cpu")
    for source in args.models.split(","):
        bundle = load_bundle(source)
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            node = {"id": f"bench-{threads}t", "hardware_class": f"cpu-{threads}-threads"}
            methods = [
                prepare(bundle, [default_config(part) for part in name.split("+")], device)
                for name in args.methods.split(",")
            ]
            for load in (float(x) for x in args.loads.split(",")):
                for batch in (int(b) for b in args.batches.split(",")):
                    workload = StreamWorkload(requests=args.requests, load=load, max_batch=batch)
                    records = measure(bundle, workload, methods, node, device=device, reps=args.reps)
                    rows = [summary(r, threads, workload) for r in records]
                    for row in rows:
                        print(json.dumps(row), flush=True)
                    print(json.dumps(winners(rows)), flush=True)


if __name__ == "__main__":
    main()
