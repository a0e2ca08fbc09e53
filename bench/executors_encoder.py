"""Compression methods on the all-MiniLM-L6-v2 encoder, as JSON lines (one per method × shape × threads).

Each line: speed-up against the unmodified encoder measured interleaved in the same process
(median of pairwise ratios over ≥ 5 repetitions), latency, throughput, the mean (and worst)
cosine of the method's embeddings to the unmodified ones, and recall@1/@5 on the local
retrieval set with the change against the unmodified encoder. Setup (quantization,
compilation) is reported apart from steady state.

    OMP_WAIT_POLICY=PASSIVE python bench/executors_encoder.py --batch 1,8 --seq 32,128 --threads 1,2
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

import executors.methods  # noqa: F401  (registers every method)
from executors.families import measure
from executors.families.encoder.workloads import embed_grid
from executors.hardware import fingerprint, node_row
from executors.protocol import prepare
from executors.registry import default_config, validate_composite
from executors.zoo import load_bundle
from profiles.settings import get_settings

METHODS = "quant.int8_dynamic,quant.weight_only_int4,sys.compile,quant.int8_dynamic+sys.compile"


def line(record: dict, threads: int) -> dict:
    workload, metrics = record["workload"], record["metrics"]
    out = {
        "model": record["model_id"],
        "method": record["method_id"],
        "batch": workload["batch_size"],
        "seq": workload["prompt_len"],
        "threads": threads,
        "status": record["status"],
    }
    if record["status"] != "ok":
        return {**out, "reason": record["reason"][:200]}
    return {
        **out,
        "speedup": round(record["speedup"], 3),
        "latency_p50_ms": round(record["latency_p50_s"] * 1e3, 3),
        "baseline_latency_p50_ms": round(record["baseline_latency_p50_s"] * 1e3, 3),
        "throughput_seq_s": round(record["throughput"], 1),
        "embedding_cosine": round(record["quality_value"], 5),
        "embedding_cosine_min": round(metrics["embedding_cosine_min"], 5),
        **{k: round(metrics[k], 4) for k in sorted(metrics) if k.startswith(("recall_at_", "baseline_recall_at_"))},
        "setup_s": record["setup_s"],
        "peak_mem_mb": round(record["peak_mem_mb"], 1),
        "baseline_peak_mem_mb": round(record["baseline_peak_mem_mb"], 1),
        "loadavg_1m": record["environment"]["loadavg_1m"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:minilm-l6")
    parser.add_argument("--methods", default=METHODS, help="comma-separated; a+b is a composite")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--seq", default="32,128")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bundle = load_bundle(args.model)
    composites = [tuple(default_config(part) for part in name.split("+")) for name in args.methods.split(",")]
    for composite in composites:
        validate_composite(composite)
    workloads = embed_grid([int(b) for b in args.batch.split(",")], [int(s) for s in args.seq.split(",")])
    cpu = torch.device("cpu")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        node = node_row(fingerprint("cpu", get_settings().cache_dir))
        baseline = prepare(bundle, [default_config("baseline")], cpu)
        prepared = [prepare(bundle, composite, cpu) for composite in composites]
        for workload in workloads:
            for record in measure(bundle, workload, prepared, node, device=cpu, reps=args.reps, baseline=baseline):
                if record["method_id"] != "baseline":
                    print(json.dumps(line(record, threads)), flush=True)


if __name__ == "__main__":
    main()
