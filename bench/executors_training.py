"""Training-speed methods on `train-to-target` workloads: targets, the profiling grid, the summary.

    python bench/executors_training.py targets            # calibrate each workload's target (JSON file)
    OMP_WAIT_POLICY=PASSIVE nice python bench/executors_training.py grid --threads 1,2 \\
        --out var/training/grid-1.jsonl   # resumable; processes with their own --out in one folder share tasks
    python bench/executors_training.py summary var/training/*.jsonl
    python bench/regrid.py merge var/training/*.jsonl

`targets` runs the reference recipe (AdamW + warm-up + cosine, its learning rate × 1) on
report seeds 1-3 of every grid workload and sets the target to the worst of their held-out
metrics at 75 % of the step budget, so the reference reaches it within budget on every seed it
was set on (AlgoPerf sets targets from its reference runs the same way); the file is committed
so that the grid's workloads — whose ids include the target — are reproducible. `grid` measures
every training method on every workload through `executors.families.measure` (tuning on seed
0, report seeds interleaved with the reference, docs/training.md) and appends the records as
JSON lines. `summary` prints, per method, the time-to-target ratio and final-metric change
against the reference on every workload, and the extrapolation's measured error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

TARGETS = Path(__file__).with_name("training_targets.json")
TARGET_POINT, TARGET_SEEDS = 0.75, (1, 2, 3)
log = logging.getLogger("executors_training")

# (model, workload grid text without target): LM from scratch on two domains, continual
# pre-training both ways, a CNN at a large and a small batch, a ViT at two batches.
GRID = (
    ("zoo:train-lm-code", "batch=16 seq=32 steps=80 eval=8 data=16384"),
    ("zoo:train-lm-code", "batch=8 seq=32 steps=80 eval=8 data=8192"),
    ("zoo:train-lm-prose", "batch=16 seq=32 steps=80 eval=8 data=16384"),
    ("zoo:train-lm-code-to-prose", "batch=16 seq=32 steps=60 eval=6 data=16384"),
    ("zoo:train-lm-prose-to-code", "batch=16 seq=32 steps=60 eval=6 data=16384"),
    ("zoo:train-cnn-digits", "batch=128 steps=80 eval=8"),
    ("zoo:train-cnn-digits", "batch=32 steps=100 eval=10"),
    ("zoo:train-vit-digits", "batch=32 steps=120 eval=12"),
    ("zoo:train-vit-digits", "batch=64 steps=100 eval=10"),
)
# What the papers report, quoted beside the measured figures.
HEADLINES = {
    "train.growth.gstack": "54.6 % fewer tokens to the same loss at 7 B (G_stack)",
    "train.curriculum.efficienttrain": ">= 1.5x wall-clock on ImageNet without accuracy loss",
    "train.optim.adabelief": "AlgoPerf's winning optimizers: 8-28 % faster than the baseline",
    "train.optim.exadam": "38.46 % faster convergence on CIFAR-10 (paper); AlgoPerf winners 8-28 %",
    "train.growth.multilevel_vcycle": "about 20 % less compute for BERT/GPT-Base, up to 51.6 % for BERT-Large",
    "train.schedule.multigrid": "3-6x faster video training at similar accuracy",
    "train.schedule.acc_gradient_lr": "up to 2x faster adversarial training",
    "train.reg.multisample_dropout": "fewer epochs to the same accuracy (ImageNet, CIFAR)",
}


def workloads():
    from executors.families import parse_grid

    targets = json.loads(TARGETS.read_text()) if TARGETS.exists() else {}
    for source, text in GRID:
        key = f"{source} {text}"
        if key not in targets:
            raise SystemExit(f"no target for {key!r}: run `python bench/executors_training.py targets` first")
        yield source, parse_grid(f"train {text} target={targets[key]}")[0]


def targets(args) -> dict:
    import torch

    import executors.methods  # noqa: F401  (registers every method)
    from executors.families import parse_grid
    from executors.families.training.engine import Trainer
    from executors.registry import default_config, get_method
    from executors.zoo import load_bundle

    torch.set_num_threads(1)
    found = json.loads(TARGETS.read_text()) if TARGETS.exists() else {}
    for source, text in GRID:
        key = f"{source} {text}"
        if key in found and not args.force:
            continue
        bundle, workload = load_bundle(source), parse_grid(f"train {text}")[0]
        runner = get_method("train.reference").apply(bundle, default_config("train.reference"))
        assert isinstance(runner, Trainer)
        at = []
        for seed in TARGET_SEEDS:
            outcome = runner.train_to_target(
                workload, seed=seed, target=-math.inf, stop_at_target=False, extrapolate=False
            )
            at.append(next(m for step, _, m in outcome.curve if step >= TARGET_POINT * workload.budget_steps))
        found[key] = math.ceil(max(at) * 1000) / 1000
        log.info("%s: target %.3f (metrics at %.0f %% of budget: %s)", key, found[key], 100 * TARGET_POINT, at)
        TARGETS.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
    return found


def grid(args) -> dict:
    import torch

    import executors.methods  # noqa: F401
    from executors.families import measure, prepare_reference
    from executors.hardware import fingerprint, node_row
    from executors.protocol import Prepared, prepare
    from executors.registry import ModelBundle, default_config, method_ids
    from executors.zoo import load_bundle
    from profiles.models import run_id_for
    from profiles.settings import get_settings

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    methods = [m for m in method_ids() if m.startswith("train.") and m != "train.reference"]
    if args.methods:
        methods = [m for m in methods if m in args.methods.split(",")]
    device, added, skipped = torch.device("cpu"), 0, 0
    bundles: dict[str, ModelBundle] = {}
    chosen = [int(i) for i in args.only.split(",")] if args.only else range(len(GRID))
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        node = node_row(fingerprint("cpu", get_settings().cache_dir))
        for number, (source, workload) in enumerate(workloads()):
            ids = [
                run_id_for(source, workload.id, m, Prepared((default_config(m),)).config_json, node["id"])
                for m in ["train.reference", *methods]
            ]
            done = _done(out.parent)
            if number not in chosen or all(i in done for i in ids) or not _claim(out.parent, ids):
                skipped += 1
                continue
            bundles.setdefault(source, load_bundle(source))
            bundle = bundles[source]
            baseline = prepare_reference(bundle, workload, device)
            prepared = [prepare(bundle, [default_config(m)], device) for m in methods]
            log.info("t%d %s %s: measuring %d methods", threads, source, workload.id, len(prepared))
            records = measure(bundle, workload, prepared, node, device=device, reps=args.reps, baseline=baseline)
            with out.open("a") as sink:
                for record in records:
                    if record["run_id"] not in done:
                        sink.write(json.dumps(record, sort_keys=True) + "\n")
                        done.add(record["run_id"])
                        added += 1
    return {"added": added, "skipped_tasks": skipped, "out": str(out)}


def _done(folder: Path) -> set[str]:
    """The run ids already written by any grid process sharing the folder (each writes its own file)."""
    return {json.loads(line)["run_id"] for part in folder.glob("*.jsonl") for line in part.read_text().splitlines()}


def _claim(folder: Path, ids: list[str]) -> bool:
    """Claims a task for this process: a marker holding its pid; a live process's marker makes the others
    skip the task, a dead one's (a stopped grid) is taken over, so a rerun resumes."""
    import hashlib
    import os

    marker = folder / "claims" / hashlib.sha256(" ".join(sorted(ids)).encode()).hexdigest()[:24]
    marker.parent.mkdir(exist_ok=True)
    if marker.exists():
        holder = int(marker.read_text() or 0)
        try:
            if holder > 0:
                os.kill(holder, 0)
                return holder == os.getpid()
        except (ProcessLookupError, PermissionError):
            pass
    marker.write_text(str(os.getpid()))
    return True


def summary(args) -> dict:
    records = [json.loads(line) for part in args.parts for line in Path(part).read_text().splitlines()]
    records = [r for r in records if r["workload"]["kind"] == "train-to-target"]
    by_method: dict[str, list[dict]] = defaultdict(list)
    audits: dict[str, Any] = {"audited_runs": 0, "predictions": 0, "would_stop": 0, "false_stops": 0, "missed_stops": 0}
    errors: list[float] = []
    for record in records:
        by_method[record["method_id"]].append(record)
        extrapolation = (record.get("metrics") or {}).get("extrapolation") or {}
        for key in audits:
            audits[key] += extrapolation.get(key) or 0
        if extrapolation.get("median_relative_error") is not None:
            errors.append(extrapolation["median_relative_error"])
    methods = {}
    for method_id, rows in sorted(by_method.items()):
        ok = [r for r in rows if r["status"] == "ok"]
        speedups = [r["speedup"] for r in ok if r.get("speedup")]
        methods[method_id] = {
            "records": len(rows),
            "ok": len(ok),
            "not_applicable": sum(r["status"] == "not-applicable" for r in rows),
            "failed": sum(r["status"] == "failed" for r in rows),
            "reached_target": sum(bool(r["metrics"].get("reached_target")) for r in ok),
            "median_time_to_target_ratio": statistics.median(speedups) if speedups else None,
            "geomean_time_to_target_ratio": math.exp(statistics.fmean(map(math.log, speedups))) if speedups else None,
            "median_steps_ratio": _median([r["metrics"].get("steps_ratio") for r in ok]),
            "median_final_metric_delta": _median([r.get("quality_delta") for r in ok]),
            "paper": HEADLINES.get(method_id),
            "tasks": [
                {
                    "model": r["model_id"],
                    "workload": r["workload_id"][:12],
                    "hardware_class": r["hardware_class"],
                    "speedup": r.get("speedup"),
                    "reached_fraction": r["metrics"].get("reached_fraction"),
                    "steps_ratio": r["metrics"].get("steps_ratio"),
                    "final_metric": r.get("quality_value"),
                    "final_metric_delta": r.get("quality_delta"),
                    "noisy": r["metrics"].get("noisy"),
                }
                for r in ok
            ],
        }
    audits["median_of_median_relative_errors"] = statistics.median(errors) if errors else None
    return {"records": len(records), "methods": methods, "extrapolation": audits}


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    calibrate = commands.add_parser("targets")
    calibrate.add_argument("--force", action="store_true", help="recalibrate workloads that have a target")
    runner = commands.add_parser("grid")
    runner.add_argument("--threads", default="1,2")
    runner.add_argument("--reps", type=int, default=5)
    runner.add_argument("--methods", default="", help="a comma list of training methods (default: all)")
    runner.add_argument("--only", default="", help="a comma list of GRID positions (default: all)")
    runner.add_argument(
        "--out", required=True, help="this process's JSON lines; processes sharing its folder split the tasks"
    )
    summarise = commands.add_parser("summary")
    summarise.add_argument("parts", nargs="+")
    args = parser.parse_args()
    action = {"targets": targets, "grid": grid, "summary": summary}[args.command]
    print(json.dumps(action(args), indent=2))


if __name__ == "__main__":
    main()
