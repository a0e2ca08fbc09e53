"""The advisor's own cost per recommendation, in process (no HTTP, no store); prints JSON.

Usage: python bench/advisor_recommend.py [--profiles FILE] [--pools 1 10 100] [--repeats 200] [--distinct 20]

Trains the advisor on the profiles (default: the shipped seed grid), then times ``recommend()``
for one model and workload on pools of 1, 10 and 100 nodes (copies of the grid's nodes, each with
its own id and RAM figure, so no node shares another's cached answer):
- ``first``: the first question on a fresh cache (every booster once per node, SHAP for the top rows);
- ``repeated``: the same question again (answers cached per advisor version, node and question);
- ``distinct``: questions never asked before (other batch sizes and lengths), one each.
Median and p99 in milliseconds, and CPU milliseconds per call; the load average beside them. What
the HTTP route adds (auth, store reads, serialisation) is bench/api_load.py's to measure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from advisor.model import fit_advisor
from advisor.recommend import _ANSWERS, _CONTRIBUTIONS, _PREDICTIONS, recommend
from profiles.transfer import read_records

SHIPPED = Path(__file__).resolve().parents[1] / "profiles" / "data" / "seed_profiles.jsonl.gz"


def pool_of(nodes: list[dict], size: int) -> list[dict]:
    return [
        {
            **nodes[i % len(nodes)],
            "id": f"bench-node-{i}",
            "ram_gb": float(nodes[i % len(nodes)].get("ram_gb") or 8) + i,
        }
        for i in range(size)
    ]


def timed_ms(call) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    call()
    return (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000


def summary(samples: list[tuple[float, float]]) -> dict:
    wall = sorted(s[0] for s in samples)
    return {
        "median_ms": round(statistics.median(wall), 2),
        "p99_ms": round(wall[min(len(wall) - 1, int(0.99 * len(wall)))], 2),
        "cpu_median_ms": round(statistics.median(s[1] for s in samples), 2),
        "calls": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=Path, default=SHIPPED)
    parser.add_argument("--pools", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--distinct", type=int, default=20)
    args = parser.parse_args()
    records = [r for _, r in read_records(args.profiles)]
    started = time.perf_counter()
    advisor, _ = fit_advisor(records, size="full")
    fit_s = time.perf_counter() - started
    query = next(r for r in records if r["workload"].get("kind") == "lm-generate")
    nodes = list(
        {r["node"]["id"]: r["node"] for r in records if r["hardware_class"] == query["hardware_class"]}.values()
    )
    out: dict = {
        "bench": "advisor_recommend",
        "profiles": args.profiles.name,
        "records": len(records),
        "candidates": len(advisor.candidates),
        "fit_s": round(fit_s, 1),
        "model": query["model_id"],
        "load_average_1min": round(os.getloadavg()[0], 1),
        "pools": {},
    }
    for size in args.pools:
        pool = pool_of(nodes, size)
        for cache in (_PREDICTIONS, _ANSWERS, _CONTRIBUTIONS):
            cache.items.clear()

        def ask(workload: dict, pool: list[dict] = pool) -> None:
            recommend(advisor, query["model"], workload, pool)

        first = timed_ms(lambda: ask(query["workload"]))
        repeated = [timed_ms(lambda: ask(query["workload"])) for _ in range(args.repeats)]
        shapes = [
            {**query["workload"], "id": f"bench-{k}", "batch_size": 1 + k % 7, "gen_len": 8 * (1 + k)}
            for k in range(args.distinct)
        ]
        distinct = [timed_ms(lambda shape=shape: ask(shape)) for shape in shapes]
        out["pools"][str(size)] = {
            "first_ms": round(first[0], 1),
            "repeated": summary(repeated),
            "distinct": summary(distinct),
        }
    out["load_average_1min_after"] = round(os.getloadavg()[0], 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
