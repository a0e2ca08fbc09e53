"""The profiling planner judged by replay on the shipped grid, against random and round-robin order; JSON.

    python bench/advisor_planner.py [--profiles FILE] [--seeds 3] [--steps 12]

Every record is hidden, then revealed in each strategy's order (the same 5 % to start with, per
seed); after each batch the advisor is retrained and scored on every task (advisor.planner).
Prints each strategy's curve of mean regret against the fraction of the grid's measuring time,
and the fraction at which it first comes within 1 % and within 0.1 % of the full grid's regret.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from advisor.planner import STRATEGIES, reached, replay
from profiles.transfer import read_records

SHIPPED = Path(__file__).resolve().parents[1] / "profiles" / "data" / "seed_profiles.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=Path, default=SHIPPED)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    records = [r for _, r in read_records(args.profiles)]
    started = time.perf_counter()
    runs = [replay(records, seed=seed, steps=args.steps) for seed in range(args.seeds)]
    full = {s: [run["curves"][s][-1]["regret"] for run in runs] for s in STRATEGIES}
    summary: dict[str, dict[str, Any]] = {
        strategy: {
            f"fraction_within_{label}": [
                reached(run["curves"][strategy], run["curves"][strategy][-1]["regret"] * (1 + tol)) for run in runs
            ]
            for label, tol in (("1pct", 0.01), ("0.1pct", 0.001))
        }
        for strategy in STRATEGIES
    }
    for figures in summary.values():
        figures["median_fraction_within_1pct"] = float(np.median(figures["fraction_within_1pct"]))
        figures["median_fraction_within_0.1pct"] = float(np.median(figures["fraction_within_0.1pct"]))
    print(
        json.dumps(
            {
                "bench": "advisor_planner",
                "profiles": args.profiles.name,
                "seeds": args.seeds,
                "seconds": round(time.perf_counter() - started, 1),
                "full_grid_regret": full,
                "summary": summary,
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
