"""Advisor training time on generated profile tables of ~10k and ~100k rows; prints JSON.

Usage: python bench/advisor_train.py [--sizes 10000 100000]
Times the table build, one learner (the log speed-up model with its two quantile models), the
whole advisor bundle (every predicted figure), single-threaded LightGBM at full size, and a
whole retrain as the service runs one (fit, judge, gate, calibrate, store: ``retrain_s``). Each
figure also comes as CPU seconds of this process (``*_cpu_s``): on a shared machine the wall time
measures the neighbours as much as the code; the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import tempfile
import time

from advisor.learner import MetaLearner
from advisor.model import INTERVAL, LEARNING_RATE, QUANTILE_ROUNDS, SIZES, fit_advisor
from advisor.synthetic import METHODS, synthetic_records
from advisor.table import table_from_records

log = logging.getLogger("bench.advisor_train")


def grid_for(rows: int) -> dict:
    """Models × workloads × 6 hardware classes × the methods ≈ rows."""
    tasks = rows / (6 * len(METHODS))
    n_workloads = max(4, round(math.sqrt(tasks / 1.5)))
    return {"n_models": max(4, round(tasks / n_workloads)), "n_workloads": n_workloads, "n_hardware": 6}


def timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start, time.process_time() - cpu


def timed_retrain(records: list[dict]) -> dict:
    """A retrain as the service runs it: an active version trained on 99 % of the rows, then the new
    version fitted on all of them, judged (deployed learner, SBS, oracle on the unseen-model split),
    gated against the active one on the same folds, calibrated and stored — in a temp SQLite store."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ACCEL_DATA_DIR"] = tmp
        from advisor.versions import train_advisor
        from profiles.db import default_engine, session_scope
        from profiles.migrate import upgrade
        from profiles.settings import get_settings

        get_settings.cache_clear()
        default_engine.cache_clear()
        upgrade(default_engine())
        older = records[: int(0.99 * len(records))]
        with session_scope() as session:
            train_advisor(session, records=older)
        with session_scope() as session:
            version, retrain, retrain_cpu = timed(train_advisor, session, records=records)
            return {
                "retrain_s": round(retrain, 2),
                "retrain_cpu_s": round(retrain_cpu, 2),
                "judged_tasks": version.evaluation["judged_tasks"],
                "gate": version.evaluation["gate"]["reason"],
            }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = []
    for size in args.sizes:
        records = list(synthetic_records(**grid_for(size)))
        load_before = os.getloadavg()[0]
        table, build_s, build_cpu = timed(table_from_records, records)
        learner = MetaLearner(
            target="log_speedup",
            relative=False,
            quantiles=INTERVAL,
            n_estimators=SIZES["full"],
            quantile_rounds=QUANTILE_ROUNDS["full"],
            learning_rate=LEARNING_RATE,
        )
        _, learner_s, learner_cpu = timed(learner.fit, table)
        _, bundle_s, bundle_cpu = timed(fit_advisor, records, size="full")
        log.info(
            "%d rows: table %.1f s, one learner %.1f s, the advisor %.1f s", len(records), build_s, learner_s, bundle_s
        )
        retrain_s = timed_retrain(records)
        results.append(
            {
                "rows": len(records),
                "tasks": len(table.tasks),
                "candidates": len(table.candidates),
                "table_build_s": round(build_s, 2),
                "table_build_cpu_s": round(build_cpu, 2),
                "speedup_model_with_quantiles_s": round(learner_s, 2),
                "speedup_model_with_quantiles_cpu_s": round(learner_cpu, 2),
                "full_advisor_fit_s": round(bundle_s, 2),
                "full_advisor_fit_cpu_s": round(bundle_cpu, 2),
                **retrain_s,
                "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            }
        )
    print(
        json.dumps(
            {
                "bench": "advisor_train",
                "machine": platform.processor() or platform.machine(),
                "lightgbm_threads": 1,
                "n_estimators": SIZES["full"],
                "quantile_rounds": QUANTILE_ROUNDS["full"],
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
