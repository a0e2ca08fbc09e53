"""A generated profile table whose best method is a known nonlinear function of the task.

Used to develop and test the advisor before (and besides) measured profiles exist. Records
have exactly the shape of `profiles.transfer` records, so they go through the same import,
feature and training code as real data. The regimes follow what STACK.md measured on CPUs
and what the papers report: int8 pays off from wide models up, self-speculative decoding at
batch 1 with long generations, compilation only on tiny models, sparse attention at long
prompts, mixed precision only on GPUs at larger batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from profiles.models import run_id_for, workload_id_for

HARDWARE = (  # hardware_class, device_kind, cores, threads, ram_gb, gpu_mem_gb, mem_bw_gbs, fp32_gflops, price
    ("cpu-2c-avx2", "cpu", 2, 2, 8, None, 20, 150, 0.05),
    ("cpu-8c-avx2", "cpu", 8, 16, 32, None, 40, 600, 0.20),
    ("cpu-32c-avx512", "cpu", 32, 64, 128, None, 120, 3000, 1.10),
    ("gpu-t4", "cuda", 8, 16, 64, 16, 320, 8100, 0.35),
    ("gpu-a100", "cuda", 16, 32, 128, 80, 2000, 19500, 2.20),
    ("gpu-h100", "cuda", 26, 52, 256, 80, 3350, 67000, 4.00),
)
METHODS = (
    "quant.int8_dynamic",
    "lm.spec.swift",
    "sys.compile",
    "attn.double_sparsity",
    "mixed.amp_bf16",
    "prune.struct.adapt_pruner",
    "quant.int8_dynamic+lm.spec.swift",
)
QUALITY_COST = {
    "quant.int8_dynamic": -0.01,
    "prune.struct.adapt_pruner": -0.04,
    "quant.int8_dynamic+lm.spec.swift": -0.01,
}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def true_log_speedups(
    width: int, batch: int, prompt: int, gen: int, threads: int, gpu: bool
) -> dict[str, float | None]:
    """Noise-free log speed-up per method; None where the method does not apply."""
    lw, lb, lp, lg = math.log2(width), math.log2(batch), math.log2(prompt), math.log2(gen)
    int8 = 0.75 * _sigmoid(3 * (lw - 8.5)) * (1 - 0.4 * _sigmoid(math.log2(threads) - 4)) - 0.1
    swift = (0.8 * _sigmoid(2 * (lg - 6.5)) - 0.35 * lb) if batch <= 4 else None
    compile_ = 0.55 * _sigmoid(3 * (7.5 - lw)) - 0.05
    sparse = 1.1 * _sigmoid(3 * (lp - 12)) - 0.15 if prompt >= 1024 else None
    amp = 0.8 * _sigmoid(1.5 * (lb - 2.5)) + 0.1 * lw / 11 - 0.1 if gpu else None
    prune = 0.25 + 0.05 * _sigmoid(lw - 9)
    composite = None if swift is None else int8 + swift - 0.9 * _sigmoid(3 * (lw - 9.5))
    return dict(
        zip(METHODS, (int8 if not gpu else int8 - 0.3, swift, compile_, sparse, amp, prune, composite), strict=True)
    )


def _model(i: int, rng: np.random.Generator) -> dict:
    width = int(2 ** rng.uniform(6, 11.5)) // 16 * 16
    layers = int(rng.integers(2, 33))
    heads = max(1, width // 64)
    params = layers * 12 * width * width + 32000 * width
    return {
        "id": f"syn-lm-{i:03d}",
        "family": "decoder-lm",
        "params": params,
        "layers": layers,
        "width": width,
        "heads": heads,
        "kv_heads": max(1, heads // int(rng.choice([1, 4]))),
        "vocab": 32000,
        "context": 8192,
        "source": "synthetic",
        "descriptors": {},
    }


def _workload(rng: np.random.Generator) -> dict:
    shape = {
        "kind": "lm-generate",
        "batch_size": int(rng.choice([1, 1, 2, 4, 8, 32])),
        "prompt_len": int(2 ** rng.integers(6, 14)),
        "gen_len": int(2 ** rng.integers(4, 10)),
        "sampling": "greedy",
        "objective": "latency",
    }
    return {"id": workload_id_for(shape), **shape, "params": {}}


def _node(row: tuple) -> dict:
    klass, kind, cores, threads, ram, gpu_mem, bandwidth, flops, price = row
    return {
        "id": f"node-{klass}",
        "name": klass,
        "hardware_class": klass,
        "device_kind": kind,
        "cpu_model": "synthetic",
        "cores": cores,
        "threads": threads,
        "ram_gb": ram,
        "gpu_name": klass if kind == "cuda" else None,
        "gpu_count": int(kind == "cuda"),
        "gpu_mem_gb": gpu_mem,
        "mem_bw_gbs": bandwidth,
        "fp32_gflops": flops,
        "fingerprint": {"probe_matmul_gflops": flops * 0.8, "probe_copy_gbs": bandwidth * 0.85},
        "price_per_hour": price,
    }


def synthetic_records(
    n_models: int = 24, n_workloads: int = 8, n_hardware: int = 6, noise: float = 0.03, seed: int = 0
) -> Iterator[dict]:
    """Every model × workload × hardware task with every method; ~n_models·n_workloads·n_hardware·7 records."""
    rng = np.random.default_rng(seed)
    models = [_model(i, rng) for i in range(n_models)]
    workloads = [_workload(rng) for _ in range(n_workloads)]
    nodes = [_node(row) for row in HARDWARE[:n_hardware]]
    for model in models:
        for workload in workloads:
            for node in nodes:
                truth = true_log_speedups(
                    model["width"],
                    workload["batch_size"],
                    workload["prompt_len"],
                    workload["gen_len"],
                    node["threads"],
                    node["device_kind"] == "cuda",
                )
                base_latency = (
                    model["params"]
                    * 2
                    * workload["batch_size"]
                    * (workload["prompt_len"] / 64 + workload["gen_len"])
                    / (node["fp32_gflops"] * 1e9)
                ) + 0.002 * workload["gen_len"]
                for method, log_speedup in truth.items():
                    yield _record(model, workload, node, method, log_speedup, base_latency, noise, rng)


def _record(model, workload, node, method, log_speedup, base_latency, noise, rng) -> dict:
    record = {
        "run_id": run_id_for(model["id"], workload["id"], method, {}, node["id"]),
        "model_id": model["id"],
        "workload_id": workload["id"],
        "node_id": node["id"],
        "hardware_class": node["hardware_class"],
        "method_id": method,
        "config": {},
        "model": model,
        "workload": workload,
        "node": node,
        "repeats": 5,
        "baseline_latency_p50_s": base_latency,
        "environment": {"generator": "advisor.synthetic"},
    }
    if log_speedup is None:
        return record | {"status": "not-applicable", "reason": f"{method} does not apply to this task"}
    speedup = math.exp(log_speedup + rng.normal(0, noise))
    memory = 1000.0 * model["params"] / 1e8 * (0.45 if "int8" in method else 1.0)
    quality = QUALITY_COST.get(method, 0.0) * (1 + abs(rng.normal(0, 0.2)))
    return record | {
        "status": "ok",
        "speedup": speedup,
        "latency_p50_s": base_latency / speedup,
        "throughput": workload["batch_size"] * workload["gen_len"] * speedup / base_latency,
        "baseline_throughput": workload["batch_size"] * workload["gen_len"] / base_latency,
        "peak_mem_mb": memory,
        "baseline_peak_mem_mb": 1000.0 * model["params"] / 1e8,
        "quality_metric": "perplexity-ratio",
        "quality_delta": quality,
    }
