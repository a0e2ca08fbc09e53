"""The vision family's profiling grid and its per-method summary, as JSON.

    nice python bench/executors_vision.py grid --model zoo:vit-mini-digits \\
        --workloads "classify batch=1,64 res=32,64" --threads 1,2 --out var/vision/vit.jsonl
    python bench/executors_vision.py summary var/vision/*.jsonl
    python bench/executors_vision.py tokens var/vision/*.jsonl
    python bench/regrid.py merge var/vision/*.jsonl

`grid` measures every vision method (and the composites below) that applies to the model on
each workload and thread count through `executors.families.measure` — the reference interleaved
in the same process, held-out top-1 through each method's own model — and appends the records
(ok, not-applicable and failed alike) as JSON lines; tasks whose records are all in `--out` are
skipped, so a stopped run resumes. Methods that train (QAT, GPUSQ-ViT, QFX, Q-HyViT, GBNN,
DisWOT) run with the shorter schedules of `GRID_CONFIGS`, sized for two shared CPU cores; each
record holds the config it ran.

`summary` prints one JSON line per (model, method, batch) at the model's largest single-view
resolution: images/s ratio against the reference (median over thread counts), top-1 delta, and
the token counts, from the records given. `tokens` prints the token methods' ratio by tokens per
image (65 at 32 px, 257 at 64 px, 1 285 for the multi-view input), batch and method.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

GRID_CONFIGS: dict[str, dict] = {
    "deploy.qat_int8": {"steps": 60},
    "sparse.gpusq_vit": {"steps": 60},
    "quant.qfx": {"steps": 60},
    "quant.q_hyvit": {"iterations": 20, "calibration_images": 64},
    "head.gbnn": {"steps": 100, "pool_images": 1024},
    "distill.diswot": {"population": 6, "generations": 2, "steps": 150},
    "deploy.onnxruntime_int8": {"calibration_images": 64},
}
COMPOSITES = ("quant.int8_dynamic+tok.tome", "quant.int8_dynamic+tok.turbo", "tok.pyramid_drop+tok.tome")
log = logging.getLogger("executors_vision")


def grid_methods(names: str | None) -> list[str]:
    from executors.registry import get_method, method_ids

    if names:
        return names.split(",")
    own = [m for m in method_ids() if "vision" in get_method(m).families and m not in ("baseline", "sys.compile")]
    return own + list(COMPOSITES)


def composite(name: str) -> tuple:
    from executors.registry import default_config, validate_composite

    steps = tuple(dataclasses.replace(default_config(p), **GRID_CONFIGS.get(p, {})) for p in name.split("+"))
    validate_composite(steps)
    return steps


def grid(args) -> dict:
    import executors.methods  # noqa: F401  (registers every method)
    from executors.families import measure, parse_grid, prepare_reference
    from executors.hardware import fingerprint, node_row
    from executors.protocol import Prepared, measurement_passes, prepare
    from executors.zoo import load_bundle
    from profiles.settings import get_settings

    out = Path(args.out)
    done = {json.loads(line)["run_id"] for line in out.read_text().splitlines()} if out.exists() else set()
    bundle = load_bundle(args.model)
    model_id = bundle.spec.row()["id"]
    composites = [composite(name) for name in grid_methods(args.methods)]
    workloads = parse_grid(args.workloads)
    device, added = torch.device("cpu"), 0
    with out.open("a") as sink:
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            node = node_row(fingerprint("cpu", get_settings().cache_dir))
            prepared: dict[str, Prepared] = {}  # applied once per thread count, reused across workloads
            for workload in workloads:
                wanted = [c for c in composites if _run_id(model_id, workload, Prepared(c), node) not in done]
                if not wanted:
                    continue
                for configs in wanted:
                    key = Prepared(configs).method_id
                    if key not in prepared:
                        prepared[key] = prepare(bundle, configs, device)
                        log.info("%s t%d: %s %s in %.1f s", args.model, threads, key, prepared[key].status,
                                 prepared[key].apply_s)  # fmt: skip
                baseline = prepare_reference(bundle, workload, device)
                runners = [prepared[Prepared(c).method_id] for c in wanted]
                for group in measurement_passes(runners):
                    for record in measure(bundle, workload, group, node, device=device, reps=5, baseline=baseline):
                        if record["run_id"] not in done:
                            sink.write(json.dumps(record, sort_keys=True) + "\n")
                            sink.flush()
                            done.add(record["run_id"])
                            added += 1
                log.info("%s t%d %s: %d records so far", args.model, threads, workload.id, added)
    return {"model": args.model, "added": added, "out": str(out)}


def _run_id(model_id: str, workload, prepared, node: dict) -> str:
    from profiles.models import run_id_for

    return run_id_for(model_id, workload.id, prepared.method_id, prepared.config_json, node["id"])


def ok_vision_records(parts: list[str]) -> list[dict]:
    records = (json.loads(line) for part in parts for line in Path(part).read_text().splitlines())
    return [r for r in records if r["workload"]["kind"] == "vision-classify" and r["status"] == "ok"]


def summary(args) -> list[dict]:
    ok = [r for r in ok_vision_records(args.parts) if r["workload"]["params"]["crops"] == 1]
    largest = {
        m: max(r["workload"]["image_size"] for r in ok if r["model_id"] == m) for m in {r["model_id"] for r in ok}
    }
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for record in ok:
        name, workload = record["model_id"], record["workload"]
        if workload["image_size"] == largest[name] and record["method_id"] != "baseline":
            cells[(name, record["method_id"], workload["batch_size"])].append(record)
    lines = []
    for (name, method, batch), group in sorted(cells.items()):
        lines.append(
            {
                "model": name,
                "method": method,
                "batch": batch,
                "resolution": largest[name],
                "images_per_s_ratio": round(statistics.median(r["speedup"] for r in group), 3),
                "top1": round(group[0]["quality_value"], 4),
                "top1_delta": round(group[0]["quality_delta"], 4),
                "tokens_per_image": group[0]["metrics"].get("tokens_per_image"),
                "flops_ratio": group[0]["metrics"].get("flops_ratio"),
                "threads": sorted(r["environment"]["threads"] for r in group),
                "noisy": any(r["metrics"].get("noisy") for r in group),
            }
        )
    return lines


def token_scaling(args) -> list[dict]:
    """Per token method, batch and tokens per image (32 px, 64 px, multi-view): the images/s ratio
    (median over thread counts and models) — where token reduction starts to pay."""
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for record in ok_vision_records(args.parts):
        if record["method_id"].startswith("tok.") or "+tok." in record["method_id"]:
            tokens = record["metrics"].get("tokens_per_image")
            cells[(record["method_id"], record["workload"]["batch_size"], tokens)].append(record)
    return [
        {
            "method": method,
            "batch": batch,
            "tokens_per_image": tokens,
            "images_per_s_ratio": round(statistics.median(r["speedup"] for r in group), 3),
            "flops_ratio": group[0]["metrics"].get("flops_ratio"),
            "top1_delta": round(statistics.median(r["quality_delta"] for r in group), 4),
            "records": len(group),
        }
        for (method, batch, tokens), group in sorted(
            cells.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or 0)
        )
    ]


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("grid")
    runner.add_argument("--model", required=True)
    runner.add_argument("--methods", default=None, help="comma-separated ids (a+b: composite); default: all vision")
    runner.add_argument("--workloads", default="classify batch=1,64 res=32,64")
    runner.add_argument("--threads", default="1,2")
    runner.add_argument("--out", required=True)
    summariser = commands.add_parser("summary")
    summariser.add_argument("parts", nargs="+")
    scaling = commands.add_parser("tokens", help="token methods' images/s ratio by tokens per image")
    scaling.add_argument("parts", nargs="+")
    args = parser.parse_args()
    if args.command == "grid":
        print(json.dumps(grid(args), indent=2))
    else:
        for line in (summary if args.command == "summary" else token_scaling)(args):
            print(json.dumps(line))


if __name__ == "__main__":
    main()
