"""Per held-out group evidence for the advisor's splits: which group each selector loses on.

`evaluate` reports one figure per split; this prints, per split and selector, the gap closed
per seed and the mean regret (oracle ÷ chosen speed-up) on each held-out model, hardware
class or workload kind, and which candidate the selector picked most often there.
Usage: python bench/advisor_folds.py --profiles profiles/data/seed_profiles.jsonl.gz --split model --seeds 3
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from advisor.evaluate import cv_folds, selector_factories
from advisor.guard import RangeGuard
from advisor.metrics import choose, gap_closed, loss_matrix
from advisor.table import table_from_records
from profiles.transfer import read_records

DEFAULT_SELECTORS = (
    "gradient_boosting",
    "gradient_boosting_guarded",
    "random_forest",
    "random_forest_guarded",
    "knn",
    "knn_guarded",
    "lightgbm",
    "lightgbm_unguarded",
    "lightgbm_risk",
)
# Is the learner better, or only the guard? The same guard around the strongest baselines answers it.
GUARDED_BASELINES = ("gradient_boosting", "random_forest", "knn")


def guarded(make):
    return lambda seed: RangeGuard(make(seed))


def out_of_fold_choices(table, factories, split: str, seed: int, n_folds: int) -> dict[str, np.ndarray]:
    chosen = {name: np.zeros(len(table.tasks), dtype=int) for name in factories}
    for train, test in cv_folds(table, split, seed, n_folds):
        train_table, test_table = table.subset(train), table.subset(test)
        for name, make in factories.items():
            scores = make(seed).fit(train_table).scores(test_table)
            chosen[name][test] = choose(scores, test_table.available)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=Path, action="append", required=True)
    parser.add_argument("--split", default="model", choices=("model", "hardware", "random"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--selectors", default=",".join(DEFAULT_SELECTORS))
    args = parser.parse_args()
    records = [record for path in args.profiles for _, record in read_records(path)]
    table = table_from_records(records)
    every = selector_factories(ablations=True)
    every |= {f"{name}_guarded": guarded(every[name]) for name in GUARDED_BASELINES}
    factories = {name: every[name] for name in ("sbs", *args.selectors.split(","), "vbs")}
    losses = loss_matrix(table)
    rows = np.arange(len(table.tasks))
    groups = table.groups["model" if args.split == "random" else args.split]
    started = time.perf_counter()
    per_seed = [out_of_fold_choices(table, factories, args.split, seed, args.folds) for seed in range(args.seeds)]
    result = {
        "profiles": [str(p) for p in args.profiles],
        "split": args.split,
        "seeds": args.seeds,
        "n_tasks": len(table.tasks),
        "seconds": round(time.perf_counter() - started, 1),
        "tasks_per_group": dict(Counter(groups.tolist())),
        "selectors": {},
    }
    for name in factories:
        task_loss = [losses[rows, chosen[name]] for chosen in per_seed]
        sbs_loss = [losses[rows, chosen["sbs"]].mean() for chosen in per_seed]
        vbs_loss = [losses[rows, chosen["vbs"]].mean() for chosen in per_seed]
        gaps = [gap_closed(t.mean(), s, v) for t, s, v in zip(task_loss, sbs_loss, vbs_loss, strict=True)]
        picks = Counter(table.candidates[j].split("{")[0] for chosen in per_seed for j in chosen[name])  # method ids
        result["selectors"][name] = {
            "gap_closed_per_seed": [round(g, 3) for g in gaps],
            "mean_regret_per_group": {
                g: round(float(np.mean([t[groups == g].mean() for t in task_loss])), 3)
                for g in sorted(set(groups.tolist()))
            },
            "most_picked": picks.most_common(3),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
