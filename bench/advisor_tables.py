"""Every selector on every table we can build or import, timed; prints JSON.

    python bench/advisor_tables.py [--lcdb DIR] [--tables NAME,...] [--seeds 1] [--selectors NAME,...] [--out FILE]

Tables:
- ``lcdb``: the Learning Curve Database (Mohr et al., 2022; MIT; the ``lcdb`` package on PyPI,
  ``pip download --no-deps lcdb==0.1.0`` and unpack, or ``pip install --no-deps lcdb``): an
  instance is (OpenML dataset, training-set size), a method is one of its learners, the value
  its mean test accuracy over LCDB's seeds (higher is better), the features the dataset's
  OpenML meta-features and the log training-set size; grouped by dataset. Nobody here made it.
  The ~1 000 × 10 table: the 10 learners with the most instances, sizes ≥ 256, ≤ 1 000 instances.
- ``synthetic``: advisor.synthetic's generated grid (1 152 tasks × 7 methods + baseline).
- ``seed-grid`` and one table per workload kind of it: the shipped profiles.
Each table's report is evaluate_table's (every baseline side by side) with its wall and CPU time;
``--out`` writes the printed summary with every table's whole report (every metric) to FILE.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import resource
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from advisor.evaluate import evaluate_table
from advisor.external import _build
from advisor.table import PerfTable, table_from_records

SHIPPED = Path(__file__).resolve().parents[1] / "profiles" / "data" / "seed_profiles.jsonl.gz"
N_LEARNERS, MIN_SIZE, MAX_INSTANCES = 10, 256, 1000
LCDB = "lcdb-accuracy"
log = logging.getLogger("advisor_tables")


def lcdb_table(root: Path) -> PerfTable:
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    with (root / "database-accuracy.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            size = int(float(row["size_train"]))
            if size >= MIN_SIZE and row["score_test"]:
                scores[(f"{row['openmlid']}@{size}", row["learner"])].append(float(row["score_test"]))
    per_learner: dict[str, int] = defaultdict(int)
    for _, learner in scores:
        per_learner[learner] += 1
    learners = sorted(sorted(per_learner, key=lambda m: -per_learner[m])[:N_LEARNERS])
    instances = sorted({i for i, m in scores if m in learners})
    instances = [instances[k] for k in np.random.default_rng(0).permutation(len(instances))[:MAX_INSTANCES]]
    meta: dict[str, dict] = {}
    with (root / "datasets.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            meta[row["openmlid"]] = {f"f.{k}": _number(v) for k, v in row.items() if k not in ("openmlid", "Name")}
    features = {
        i: {**meta.get(i.split("@")[0], {}), "f.log2_train_size": math.log2(int(i.split("@")[1]))} for i in instances
    }
    cells = {(i, m): v for (i, m), v in scores.items() if m in learners and i in set(instances)}
    table = _build(LCDB, sorted(instances), features, learners, cells, "score", True, None)
    dataset = np.array([t.split("@")[0] for t in table.tasks])
    return replace(table, groups={"model": dataset, "random": np.array(table.tasks)})


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def profile_tables() -> list[PerfTable]:
    from advisor.synthetic import synthetic_records
    from profiles.transfer import read_records

    records = [r for _, r in read_records(SHIPPED)]
    tables = [table_from_records(synthetic_records(), name="synthetic"), table_from_records(records, name="seed-grid")]
    for kind in sorted({r["workload"].get("kind") or "lm-generate" for r in records}):
        mine = [r for r in records if (r["workload"].get("kind") or "lm-generate") == kind]
        if len({r["model_id"] for r in mine}) >= 2:
            tables.append(table_from_records(mine, name=f"seed-grid:{kind}"))
    return tables


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lcdb", type=Path, default=None, help="the unpacked lcdb package folder (has datasets.csv)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--tables", default="", help="comma-separated table names to run (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="write the summary and every table's report here")
    parser.add_argument(
        "--selectors", default="", help="comma-separated selectors to run, with sbs and vbs (default: all of them)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    wanted = {t for t in args.tables.split(",") if t}
    tables = [lcdb_table(args.lcdb)] if args.lcdb else []
    if not wanted or wanted - {LCDB}:  # building the profile tables reads the whole shipped grid
        tables += profile_tables()
    out, reports = [], []
    for table in tables:
        if wanted and table.name not in wanted:
            continue
        load_before = os.getloadavg()[0]
        started, cpu = time.perf_counter(), time.process_time()
        report = evaluate_table(
            table,
            splits=tuple(s for s in ("model", "random") if s in table.groups),
            seeds=args.seeds,
            selectors=tuple(s for s in args.selectors.split(",") if s) or None,
        )
        summary = {
            split: {name: round(results[name]["gap_closed"]["mean"], 3) for name in results if not name.startswith("_")}
            for split, results in report["splits"].items()
        }
        out.append(
            {
                "table": table.name,
                "tasks": len(table.tasks),
                "candidates": len(table.candidates),
                "seconds": round(time.perf_counter() - started, 1),
                "cpu_seconds": round(time.process_time() - cpu, 1),  # the wall time on a shared machine is the load's
                "load_average_1min_before": round(load_before, 1),
                "load_average_1min": round(os.getloadavg()[0], 1),
                "gap_closed": summary,
            }
        )
        reports.append(report)
        print(json.dumps(out[-1]), flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "bench": "advisor_tables",
        "command": " ".join(["python", *sys.argv]),
        "seeds": args.seeds,
        "process_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),  # with reading and building the tables
        "tables": out,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        full = {**result, "tables": [{**row, "report": report} for row, report in zip(out, reports, strict=True)]}
        args.out.write_text(json.dumps(full, indent=1) + "\n")
        log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
