"""Re-measure selected records of the shipped seed grid with the current protocol, and fold them back.

    python bench/regrid.py run --select compile,noisy --out profiles/data/parts/regrid.jsonl
    python bench/regrid.py run --add "zoo:lm-1m,zoo:lm-8m" --methods baseline,lm.spec.swift \\
        --workloads "batch=1,4 prompt=32 gen=32 sampling=sample" --out profiles/data/parts/sampled.jsonl
    python bench/regrid.py merge profiles/data/parts/*.jsonl

`run` groups the chosen (model, workload, method) cells by task and hardware class (torch
thread count), measures each task once through `executors.families.measure` — the reference
and the cell's methods interleaved in this process — and appends the records to `--out` as JSON
lines (resumable: run ids already in the file are skipped). Selections: `compile` (every
sys.compile record), `copied` (the sys.compile records whose quality the old harness copied from
the baseline and `mark` flagged as not measured), `noisy` (records
whose per-round ratio spread exceeds the protocol's bound). `merge` replaces records of the
shipped grid by run id and adds new ones; `mark` flags the stored records whose per-round ratios
scatter beyond the bound (from the ratios they hold). Selections also take `worst:N` (the N
records with the widest spread). Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

SEED = Path(__file__).resolve().parents[1] / "profiles" / "data" / "seed_profiles.jsonl.gz"
log = logging.getLogger("regrid")


def read_seed() -> list[dict]:
    with gzip.open(SEED, "rt") as handle:
        return [json.loads(line) for line in handle]


def write_seed(records: list[dict]) -> None:
    with gzip.open(SEED, "wt", compresslevel=9) as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def spread(record: dict) -> float:
    from executors.protocol import ratio_spread

    return ratio_spread((record.get("metrics") or {}).get("pairwise_speedups") or [1.0])


def selected(records: list[dict], selections: set[str]) -> list[dict]:
    from executors.families import get_kind
    from executors.protocol import NOISE_BOUND

    worst = next((int(s.split(":")[1]) for s in selections if s.startswith("worst:")), 0)
    candidates = [
        r for r in records if r["status"] == "ok" and r["method_id"] != get_kind(r["workload"]["kind"]).reference
    ]
    noisiest = {id(r) for r in sorted(candidates, key=spread, reverse=True)[:worst]}
    chosen = []
    for record in candidates:
        compiled = "compile" in selections and "sys.compile" in record["method_id"].split("+")
        copied = "copied" in selections and (record.get("metrics") or {}).get("quality_note") == COPIED
        noisy = "noisy" in selections and spread(record) > NOISE_BOUND
        if compiled or copied or noisy or id(record) in noisiest:
            chosen.append(record)
    return chosen


def mark(args) -> dict:
    """Annotates every stored record with the spread of its per-round ratios and the noisy flag
    the protocol gives new records, from the ratios it already holds (no figure is changed), and
    marks the quality of `sys.compile` records not yet re-measured as uninformative."""
    from executors.protocol import NOISE_BOUND

    records = read_seed()
    flagged = unmeasured = 0
    for record in records:
        metrics = record.get("metrics") or {}
        if record["status"] == "ok" and copied_quality(record):
            metrics.update(quality_informative=False, quality_note=COPIED)
            record["metrics"] = metrics
            unmeasured += 1
        if record["status"] != "ok" or "ratio_spread" in metrics or not metrics.get("pairwise_speedups"):
            continue
        value = spread(record)
        metrics.update(
            ratio_spread=round(value, 4), noise_bound=NOISE_BOUND, noisy=value > NOISE_BOUND, remeasured=False
        )
        flagged += value > NOISE_BOUND
    write_seed(records)
    return {"records": len(records), "newly_flagged_noisy": flagged, "compile_quality_marked_unmeasured": unmeasured}


COPIED = "quality copied from the reference by the pre-protocol harness, not measured (regrid.py run --select compile)"


def copied_quality(record: dict) -> bool:
    """A `sys.compile` record of the old harness: its quality is the reference's, copied. Records of
    the protocol carry `quality_informative` (measured through the compiled model)."""
    metrics = record.get("metrics") or {}
    return "sys.compile" in record["method_id"].split("+") and "quality_informative" not in metrics


def _shape(record: dict) -> dict:
    """The workload's JSON shape from the stored row (its id is the hash of that shape)."""
    from executors.families import get_kind

    row = record["workload"]
    kind = get_kind(row["kind"])
    fields = {
        f: row[f] for f in ("batch_size", "prompt_len", "gen_len", "sampling", "objective") if row.get(f) is not None
    }
    fields.update(row.get("params") or {})
    names = {f.name for f in dataclasses.fields(kind.workload)}
    aliases = {"batch_size": "max_batch"} if "max_batch" in names else {}
    shape = {aliases.get(k, k): v for k, v in fields.items() if aliases.get(k, k) in names}
    return {"kind": kind.name, **shape}


def workload_of(record: dict):
    from executors.families import workload_from_json

    workload = workload_from_json(_shape(record))
    if workload.id != record["workload_id"]:
        raise ValueError(f"cannot rebuild workload {record['workload_id']} from its row: got {workload.id}")
    return workload


def run(args) -> dict:
    import torch

    import executors.methods  # noqa: F401  (registers every method)
    from executors.families import measure, parse_grid, prepare_reference
    from executors.hardware import fingerprint, node_row
    from executors.protocol import measurement_passes, prepare
    from executors.registry import composite_from_json, default_config
    from executors.zoo import load_bundle
    from profiles.models import run_id_for
    from profiles.settings import get_settings

    out = Path(args.out)
    done = {json.loads(line)["run_id"] for line in out.read_text().splitlines()} if out.exists() else set()
    tasks: dict[tuple, dict] = defaultdict(dict)  # (source, threads, workload id) → {"workload", "configs"}
    if args.select:
        for record in selected(read_seed(), set(args.select.split(","))):
            key = (record["model_id"], record["environment"]["threads"], record["workload_id"])
            task = tasks[key]
            task["workload"] = workload_of(record)
            task.setdefault("configs", {})[record["method_id"]] = record["config"]
    if args.add:
        for source in args.add.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                for workload in parse_grid(args.workloads):
                    task = tasks[(source, threads, workload.id)]
                    task["workload"] = workload
                    for method in args.methods.split(","):
                        steps = [default_config(part) for part in method.split("+")]
                        task.setdefault("configs", {})[method] = (
                            {"method": method, "steps": [_json(c) for c in steps]}
                            if len(steps) > 1
                            else _json(steps[0])
                        )
    bundles: dict[str, Any] = {}
    prepared: dict[tuple, Any] = {}  # (source, threads, configs) → applied once, reused across that model's tasks
    device, added, measured = torch.device("cpu"), 0, 0
    cache = get_settings().cache_dir
    with out.open("a") as sink:
        for (source, threads, _), task in ordered(tasks, args.max_call_seconds):
            torch.set_num_threads(threads)
            node = node_row(fingerprint("cpu", cache))
            workload = task["workload"]
            expected = {run_id_for(source, workload.id, mid, c, node["id"]) for mid, c in task["configs"].items()}
            if expected <= done:
                continue  # measured in an earlier run of this command
            bundles.setdefault(source, load_bundle(source))
            bundle = bundles[source]
            configs = [composite_from_json(c.get("steps", c)) for c in task["configs"].values()]
            baseline = prepare_reference(bundle, workload, device)
            runners = []
            for composite in configs:
                key = (source, threads, repr(composite))
                if key not in prepared:
                    prepared[key] = prepare(bundle, composite, device)
                runners.append(prepared[key])
            for group in measurement_passes(runners):
                for record in measure(bundle, workload, group, node, device=device, reps=5, baseline=baseline):
                    if record["run_id"] not in done:
                        sink.write(json.dumps(record, sort_keys=True) + "\n")
                        sink.flush()
                        done.add(record["run_id"])
                        added += 1
            measured += 1
            log.info("%s t%d %s: %d records so far", source, threads, workload.id, added)
    return {"tasks": len(tasks), "measured": measured, "added": added, "out": str(out)}


def ordered(tasks: dict[tuple, dict], max_call_seconds: float | None) -> list[tuple[tuple, dict]]:
    """Per model, the cheapest workloads first with every thread count of one workload together (so
    a run cut short still covers both hardware classes); without `max_call_seconds` the stored
    order (model, threads). Workloads estimated slower per call than `max_call_seconds` are left out."""
    if max_call_seconds is None:
        return sorted(tasks.items(), key=lambda item: (item[0][0], item[0][1]))
    from executors.families import kind_of
    from executors.zoo import load_bundle

    params = {source: load_bundle(source).spec.params for source in {key[0] for key in tasks}}

    def seconds(item) -> float:
        (source, _, _), task = item
        estimate = kind_of(task["workload"]).call_seconds
        return estimate(params[source], task["workload"]) if estimate else 1.0

    kept = [item for item in tasks.items() if seconds(item) <= max_call_seconds]
    log.info("%d of %d tasks estimated at most %.1f s per call", len(kept), len(tasks), max_call_seconds)
    return sorted(kept, key=lambda item: (item[0][0], seconds(item), item[0][2], item[0][1]))


def _json(config) -> dict:
    from executors.registry import config_to_json

    return config_to_json(config)


def merge(args) -> dict:
    seed = {r["run_id"]: r for r in read_seed()}
    before = len(seed)
    replaced = new = 0
    for part in args.parts:
        for line in Path(part).read_text().splitlines():
            record = json.loads(line)
            replaced += record["run_id"] in seed
            new += record["run_id"] not in seed
            seed[record["run_id"]] = record
    write_seed(list(seed.values()))
    noisy = [r for r in seed.values() if (r.get("metrics") or {}).get("noisy")]
    spreads = [spread(r) for r in seed.values() if r["status"] == "ok"]
    return {
        "records_before": before,
        "records_after": len(seed),
        "replaced": replaced,
        "added": new,
        "flagged_noisy": len(noisy),
        "median_ratio_spread": round(statistics.median(spreads), 4) if spreads else math.nan,
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run")
    runner.add_argument(
        "--select", default="", help="compile,copied,noisy,worst:N: records of the shipped grid to measure again"
    )
    runner.add_argument("--add", default="", help="model sources to measure new workloads on")
    runner.add_argument("--methods", default="baseline")
    runner.add_argument("--workloads", default="batch=1 prompt=32 gen=32")
    runner.add_argument("--threads", default="1,2")
    runner.add_argument("--out", required=True)
    runner.add_argument(
        "--max-call-seconds", type=float, default=None, help="cheapest workloads first; skip those estimated slower"
    )
    merger = commands.add_parser("merge")
    merger.add_argument("parts", nargs="+")
    commands.add_parser("mark", help="flag stored records whose per-round ratios scatter beyond the bound")
    args = parser.parse_args()
    command = {"run": run, "merge": merge, "mark": mark}[args.command]
    print(json.dumps(command(args), indent=2))


if __name__ == "__main__":
    main()
