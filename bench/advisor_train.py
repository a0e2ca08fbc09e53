"""Advisor training time on generated profile tables of ~10k and ~100k rows; prints JSON.

Usage: python bench/advisor_train.py [--sizes 10000 100000]
Times the table build, one learner (the log speed-up model with its two quantile models) and
the whole advisor bundle (every predicted figure), single-threaded LightGBM at full size.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

from advisor.learner import MetaLearner
from advisor.model import INTERVAL, SIZES, fit_advisor
from advisor.synthetic import METHODS, synthetic_records
from advisor.table import table_from_records


def grid_for(rows: int) -> dict:
    """Models × workloads × 6 hardware classes × the methods ≈ rows."""
    tasks = rows / (6 * len(METHODS))
    n_workloads = max(4, round(math.sqrt(tasks / 1.5)))
    return {"n_models": max(4, round(tasks / n_workloads)), "n_workloads": n_workloads, "n_hardware": 6}


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        records = list(synthetic_records(**grid_for(size)))
        table, build_s = timed(table_from_records, records)
        learner = MetaLearner(target="log_speedup", relative=False, quantiles=INTERVAL, n_estimators=SIZES["full"])
        _, learner_s = timed(learner.fit, table)
        _, bundle_s = timed(fit_advisor, records, size="full")
        results.append(
            {
                "rows": len(records),
                "tasks": len(table.tasks),
                "candidates": len(table.candidates),
                "table_build_s": round(build_s, 2),
                "speedup_model_with_quantiles_s": round(learner_s, 2),
                "full_advisor_fit_s": round(bundle_s, 2),
            }
        )
    print(
        json.dumps(
            {
                "bench": "advisor_train",
                "machine": platform.processor() or platform.machine(),
                "lightgbm_threads": 1,
                "n_estimators": SIZES["full"],
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
