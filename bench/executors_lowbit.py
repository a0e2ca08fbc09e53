"""ABQ-LLM (W2…W8 × A8/A16) and EdgeQAT (W8A8+KV8 QAT) against the baseline and PTQ int8, as JSON.

One interleaved harness pass (baseline and one config, ≥ 5 repetitions, median of pairwise
ratios) per config — the harness keys a pass by method id, so two configs of one method never
share a pass; perplexity on the same held-out windows for all (relative change, negative = worse).
Setup time is what this process spent applying (small when the calibration/training cache is warm) and, separately,
the calibration/training wall time recorded when the cache entry was made.

    OMP_WAIT_POLICY=PASSIVE python bench/executors_lowbit.py --models zoo:lm-1m,zoo:lm-8m --threads 1
"""

from __future__ import annotations

import argparse
import json

ABQ = "quant.abq_arbitrary_bit"
EDGEQAT = "quant.qat.edgeqat"
INT8 = "quant.int8_dynamic"
CONFIGS = [
    {"method": ABQ, "params": {"w_bits": 8}},
    {"method": ABQ, "params": {"w_bits": 4}},
    {"method": ABQ, "params": {"w_bits": 3}},
    {"method": ABQ, "params": {"w_bits": 2}},
    {"method": ABQ, "params": {"w_bits": 2, "bit_balance": False}},
    {"method": ABQ, "params": {"w_bits": 2, "epochs": 0}},  # no distribution correction: the ablation
    {"method": ABQ, "params": {"w_bits": 4, "a_bits": 8}},
    {"method": INT8, "params": {}},
    {"method": EDGEQAT, "params": {}},
    {"method": EDGEQAT, "params": {"entropy_weight": 0.0, "distribution_weight": 0.0}},  # plain QAT + KD
    {"method": EDGEQAT, "params": {"steps": 0}},  # the deployed grid before any training
]
STATS = (
    "w_bits",
    "a_bits",
    "storage_bits",
    "calibration_s",
    "calibration_cached",
    "train_s",
    "train_cached",
    "final_train_losses",
    "kernel_backend",
)


def row(record: dict, prepared) -> dict:
    from executors.protocol import model_bytes

    defaults = _defaults(record["method_id"])
    changed = {k: v for k, v in record["config"]["params"].items() if defaults[k] != v}
    out = {"model": record["model_id"], "method": record["method_id"], "config": changed, "status": record["status"]}
    if record["status"] != "ok":
        return out | {"reason": (record["reason"] or "")[:200]}
    metrics = record["metrics"]
    out.update(
        speedup=round(record["speedup"], 3),
        latency_p50_s=round(record["latency_p50_s"], 4),
        heldout_perplexity=round(metrics["heldout_perplexity"], 4),
        baseline_heldout_perplexity=round(metrics["baseline_heldout_perplexity"], 4),
        quality_delta=round(record["quality_delta"], 4),
        greedy_token_match=round(metrics["greedy_token_match"], 3),
        model_bytes=model_bytes(prepared.runner.model),
        setup_s=record["setup_s"],
    )
    out.update({k: metrics[k] for k in STATS if k in metrics})
    return out


def side_by_side(rows: list[dict]) -> list[dict]:
    """EdgeQAT's default next to PTQ int8 of Executors I, per model (same inputs, same pass)."""
    pairs = []
    for model in sorted({r["model"] for r in rows}):
        mine = {r["method"]: r for r in rows if r["model"] == model and r["status"] == "ok" and not r["config"]}
        if EDGEQAT in mine and INT8 in mine:
            keys = ("speedup", "heldout_perplexity", "quality_delta", "greedy_token_match", "model_bytes", "setup_s")
            pairs.append(
                {"model": model, EDGEQAT: {k: mine[EDGEQAT][k] for k in keys}, INT8: {k: mine[INT8][k] for k in keys}}
            )
    return pairs


def _defaults(method_id: str) -> dict:
    from executors.registry import config_to_json, default_config

    return config_to_json(default_config(method_id))["params"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="zoo:lm-8m")
    parser.add_argument("--workload", default='{"batch_size": 1, "prompt_len": 32, "gen_len": 32}')
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    import torch

    import executors.methods  # noqa: F401
    from executors.families import measure, workload_from_json
    from executors.hardware import fingerprint, node_row
    from executors.protocol import prepare
    from executors.registry import config_from_json, default_config
    from executors.zoo import load_bundle

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    node = node_row(fingerprint())
    workload = workload_from_json(json.loads(args.workload))  # no "kind": lm-generate
    rows = []
    for source in args.models.split(","):
        bundle = load_bundle(source)
        baseline = prepare(bundle, [default_config("baseline")], device)
        for config in CONFIGS:
            prepared = prepare(bundle, [config_from_json(config)], device)
            record = measure(bundle, workload, [prepared], node, device=device, reps=args.reps, baseline=baseline)[1]
            rows.append(row(record, prepared))
    print(
        json.dumps(
            {
                "workload": workload.shape(),
                "threads": args.threads,
                "runs": rows,
                "edgeqat_vs_int8_dynamic": side_by_side(rows),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
