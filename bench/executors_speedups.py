"""Speed-ups per method × model × workload, as JSON.

Measures with the profiler harness (interleaved baseline, ≥ 5 repetitions, median of pairwise
ratios), or with `--store` summarises records already in a store (e.g. the seed grid):

    python bench/executors_speedups.py --models zoo:lm-30m --workloads "batch=1 prompt=32 gen=32,128"
    python bench/executors_speedups.py --store sqlite:////tmp/seed.db
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

SUMMARY_METRICS = ("acceptance_rate", "mean_accepted_len", "forwards_per_token")


def summarise(records) -> list[dict]:
    rows = []
    for r in records:
        if r["status"] != "ok":
            rows.append(
                {
                    "model": r["model_id"],
                    "method": r["method_id"],
                    "hardware_class": r["hardware_class"],
                    "workload": _shape(r["workload"]),
                    "status": r["status"],
                    "reason": r["reason"][:120],
                }
            )
            continue
        row = {
            "model": r["model_id"],
            "method": r["method_id"],
            "hardware_class": r["hardware_class"],
            "workload": _shape(r["workload"]),
            "speedup": round(r["speedup"], 3),
            "latency_p50_s": round(r["latency_p50_s"], 4),
            "throughput_tok_s": round(r["throughput"], 1),
            "quality_metric": r["quality_metric"],
            "quality_delta": round(r["quality_delta"], 4),
            "setup_s": r["setup_s"],
        }
        row.update({k: round(r["metrics"][k], 3) for k in SUMMARY_METRICS if r["metrics"].get(k) is not None})
        rows.append(row)
    return rows


def _shape(workload: dict) -> str:
    return f"b{workload['batch_size']} p{workload['prompt_len']} g{workload['gen_len']} {workload['sampling']}"


def per_method(rows: list[dict]) -> dict:
    by = defaultdict(list)
    for row in rows:
        if "speedup" in row:
            by[(row["method"], row["hardware_class"])].append(row["speedup"])
    return {
        f"{m} @ {h}": {"median": round(statistics.median(v), 3), "max": max(v), "min": min(v), "n": len(v)}
        for (m, h), v in sorted(by.items())
    }


QUALITY_FLOOR = -0.05  # a lossy method may cost at most 5 % (relative perplexity) to win a task


def best_per_task(rows: list[dict], quality_floor: float = QUALITY_FLOOR) -> list[dict]:
    """The fastest method of every (model, hardware class, workload) within the quality floor."""
    tasks = defaultdict(list)
    for row in rows:
        if "speedup" in row and row["quality_delta"] >= quality_floor:
            tasks[(row["model"], row["hardware_class"], row["workload"])].append(row)
    best = []
    for (model, hardware_class, workload), candidates in sorted(tasks.items()):
        winner = max(candidates, key=lambda row: row["speedup"])
        best.append(
            {
                "model": model,
                "hardware_class": hardware_class,
                "workload": workload,
                "best": winner["method"],
                "speedup": winner["speedup"],
                "methods_measured": len(candidates),
            }
        )
    return best


def markdown(rows: list[dict]) -> str:
    """The tables docs/seed-profiles.md shows: wins per model × hardware class, then every task."""
    best = best_per_task(rows)
    wins: defaultdict[tuple[str, str], defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in best:
        wins[(row["model"], row["hardware_class"])][row["best"]] += 1
    lines = ["| model | hardware class | tasks | best method (tasks won) |", "|---|---|---|---|"]
    for (model, hardware_class), counts in sorted(wins.items()):
        ranked = ", ".join(f"{m} ({n})" for m, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {model} | {hardware_class} | {sum(counts.values())} | {ranked} |")
    speedups = {(r["model"], r["hardware_class"], r["workload"], r["method"]): r for r in rows if "speedup" in r}
    methods = sorted({r["method"] for r in rows if "speedup" in r and r["method"] != "baseline"})
    lines += ["", "| model | hw | workload | best | " + " | ".join(methods) + " |", "|---" * (4 + len(methods)) + "|"]
    for row in best:
        cells = []
        for method in methods:
            hit = speedups.get((row["model"], row["hardware_class"], row["workload"], method))
            cells.append(f"{hit['speedup']:.2f}" if hit else "–")
        hw = row["hardware_class"].rsplit("-", 1)[-1]
        lines.append(
            f"| {row['model']} | {hw} | {row['workload']} | **{row['best']}** {row['speedup']:.2f}× | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="summarise this store instead of measuring")
    parser.add_argument("--models", default="zoo:lm-30m")
    parser.add_argument(
        "--methods",
        default="sys.compile,quant.int8_dynamic,quant.weight_only_int4,lm.spec.swift,lm.spec.medusa,lm.parallel.jacobi",
    )
    parser.add_argument("--workloads", default="batch=1 prompt=32 gen=32,128")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--markdown", action="store_true", help="print the docs tables instead of JSON")
    args = parser.parse_args()
    if args.store:
        from profiles.db import make_engine, session_scope
        from profiles.transfer import iter_records

        with session_scope(make_engine(args.store)) as session:
            rows = summarise(list(iter_records(session)))
    else:
        import torch

        import executors.methods  # noqa: F401
        from executors.cli import parse_workloads
        from executors.families import measure
        from executors.hardware import fingerprint, node_row
        from executors.protocol import prepare
        from executors.registry import default_config
        from executors.zoo import load_bundle

        if args.threads:
            torch.set_num_threads(args.threads)
        device = torch.device("cpu")
        node = node_row(fingerprint())
        records = []
        for source in args.models.split(","):
            bundle = load_bundle(source)
            prepared = [prepare(bundle, [default_config(m)], device) for m in args.methods.split(",")]
            for workload in parse_workloads(args.workloads):
                records += measure(bundle, workload, prepared, node, device=device, reps=args.reps)
        rows = summarise(records)
    if args.markdown:
        print(markdown(rows))
        return
    print(json.dumps({"runs": rows, "per_method": per_method(rows), "best_per_task": best_per_task(rows)}, indent=1))


if __name__ == "__main__":
    main()
