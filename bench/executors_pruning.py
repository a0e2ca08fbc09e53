"""Pruning methods (Adapt-Pruner, PERP) on the zoo LMs, as JSON.

Per model and config: parameters and weight bytes before/after, speed-up against the
unpruned model (profiler harness: interleaved, ≥ 5 repetitions, median of pairwise ratios),
held-out perplexity and its relative change, the achieved sparsity, and the pruning +
training wall time (setup). The zoo LMs are briefly trained, so any further training lowers
their perplexity by itself; `--dense-control` therefore also trains the *unpruned* model for
the same steps on the same data and reports its perplexity — the fair reference for a pruned
model's quality.

    OMP_WAIT_POLICY=PASSIVE python bench/executors_pruning.py --models zoo:lm-1m,zoo:lm-8m --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json

DEFAULT_CONFIGS = [
    {"method": "prune.struct.adapt_pruner", "params": {"target_sparsity": 0.25, "recovery_steps": 25, "seq_len": 128}},
    {
        "method": "prune.struct.adapt_pruner",
        "params": {"target_sparsity": 0.5, "increments": 8, "recovery_steps": 25, "seq_len": 128},
    },
    [
        {
            "method": "prune.struct.adapt_pruner",
            "params": {"target_sparsity": 0.5, "increments": 8, "recovery_steps": 25, "seq_len": 128},
        },
        {"method": "quant.int8_dynamic"},
    ],
    {"method": "prune.perp", "params": {"sparsity": 0.5, "steps": 0, "retrain": ""}},
    {"method": "prune.perp", "params": {"sparsity": 0.5}},
    {"method": "prune.perp", "params": {"pattern": "2:4"}},
    {"method": "prune.perp", "params": {"sparsity": 0.8, "steps": 0, "retrain": ""}},
    {"method": "prune.perp", "params": {"sparsity": 0.8}},
    {"method": "prune.perp", "params": {"sparsity": 0.8, "retrain": "biases,norms,masklora"}},
]


def dense_control(bundle, config) -> float:
    """Perplexity of the unpruned model trained exactly as Adapt-Pruner's recovery trains."""
    from executors.families.lm.harness import PPL_LENGTH, PPL_WINDOWS
    from executors.families.lm.workloads import heldout_windows, perplexity
    from executors.methods.prune.adapt_pruner import recovery_windows
    from executors.methods.prune.surgery import train

    model = copy.deepcopy(bundle.model)
    windows = recovery_windows(bundle, config)
    for step in range(config.increments):
        train(
            model,
            list(model.parameters()),
            windows,
            steps=config.recovery_steps,
            batch=config.batch,
            lr=config.lr,
            seed=config.seed + step,
        )
    length = min(PPL_LENGTH, bundle.model.config.max_seq_len)
    return perplexity(model, heldout_windows(bundle, PPL_WINDOWS, length))


def row_of(record: dict, prepared, bundle) -> dict:
    from executors.families.lm.model import count_parameters
    from executors.protocol import model_bytes

    row = {
        "model": record["model_id"],
        "method": record["method_id"],
        "config": record["config"],
        "threads": record["environment"]["threads"],
        "status": record["status"],
    }
    if record["status"] != "ok":
        return {**row, "reason": record["reason"]}
    metrics, model = record["metrics"], prepared.runner.model
    # Quantized modules hide their packed weights from parameters(): Adapt-Pruner reports its own count.
    row.update(
        params_before=count_parameters(bundle.model),
        params_after=metrics.get("params_after", None if len(prepared.configs) > 1 else count_parameters(model)),
        model_bytes_before=model_bytes(bundle.model),
        model_bytes_after=model_bytes(model),
        speedup=round(record["speedup"], 3),
        latency_p50_s=round(record["latency_p50_s"], 4),
        baseline_latency_p50_s=round(record["baseline_latency_p50_s"], 4),
        perplexity=round(metrics["heldout_perplexity"], 4),
        baseline_perplexity=round(metrics["baseline_heldout_perplexity"], 4),
        perplexity_delta=round(record["quality_delta"], 4),
        setup_s=record["setup_s"],
        training_s=metrics.get("setup_training_s"),
        pruned_cached=metrics.get("pruned_cached"),
    )
    for key in ("sparsity", "retrained_params", "retrained_fraction", "layer_shapes"):
        if key in metrics:
            row[key] = metrics[key]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="zoo:lm-1m,zoo:lm-8m")
    parser.add_argument("--configs", default=None, help="JSON list of method configs (a list item = a composite)")
    parser.add_argument("--workload", default='{"batch_size": 1, "prompt_len": 64, "gen_len": 32}')
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dense-control", action="store_true", help="also train the unpruned model as a reference")
    args = parser.parse_args()

    import torch

    import executors.methods  # noqa: F401
    from executors.families import measure, workload_from_json
    from executors.hardware import fingerprint, node_row
    from executors.protocol import prepare
    from executors.registry import composite_from_json, default_config, method_of
    from executors.zoo import load_bundle

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    node = node_row(fingerprint())
    workload = workload_from_json(json.loads(args.workload))  # no "kind": lm-generate
    configs = [composite_from_json(c) for c in (json.loads(args.configs) if args.configs else DEFAULT_CONFIGS)]
    rows, controls = [], {}
    for source in args.models.split(","):
        bundle = load_bundle(source)
        baseline = prepare(bundle, [default_config("baseline")], device)
        for composite in configs:
            # One measure() per config: the harness keys timings by method id, so two configs of one
            # method must not share a call; each still alternates with the baseline.
            p = prepare(bundle, composite, device)
            record = measure(bundle, workload, [p], node, device=device, reps=args.reps, baseline=baseline)[1]
            row = row_of(record, p, bundle)
            first = p.configs[0]
            if args.dense_control and method_of(first).id == "prune.struct.adapt_pruner":
                if (source, first) not in controls:
                    controls[source, first] = dense_control(bundle, first)
                row["dense_control_perplexity"] = round(controls[source, first], 4)
            rows.append(row)
    print(json.dumps({"workload": workload.row(), "threads": args.threads, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
