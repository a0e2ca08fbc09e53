"""Recommendation latency of a trained advisor (generated ~10k-row profiles); prints JSON.

Usage: python bench/advisor_recommend.py [--repeats 50]
Times recommend() for one node and for a pool of six nodes, after one warm-up call; reports
the median and p90 over the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from advisor.model import fit_advisor
from advisor.recommend import recommend
from advisor.synthetic import synthetic_records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    records = list(synthetic_records(n_models=20, n_workloads=12, n_hardware=6))
    advisor, _ = fit_advisor(records, size="full")
    nodes = list({r["node"]["id"]: r["node"] for r in records}.values())
    query = records[0]
    out = {"bench": "advisor_recommend", "training_rows": len(records), "candidates": len(advisor.candidates)}
    for label, pool in (("one_node", nodes[:1]), ("six_nodes", nodes)):
        recommend(advisor, query["model"], query["workload"], pool)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            recommend(advisor, query["model"], query["workload"], pool, quality_floor=-0.02)
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        out[label] = {
            "median_ms": round(statistics.median(times), 2),
            "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
            "repeats": args.repeats,
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
