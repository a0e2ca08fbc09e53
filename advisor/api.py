"""The plain functions the API layer calls (it never needs the CLI or the learners directly)."""

from __future__ import annotations

from advisor.evaluate import SPLITS, evaluate_table
from advisor.model import AdvisorModel, Candidate, fit_advisor
from advisor.recommend import DEFAULT_QUALITY_FLOOR, Excluded, Recommendation, RecommendationResult, recommend
from advisor.table import PerfTable, table_from_records
from advisor.versions import (
    activate_version,
    active_advisor,
    compare_versions,
    keep_comparison,
    rollback,
    train_advisor,
)
from advisor.versions import scores as version_scores


def evaluate(
    records,
    splits: tuple[str, ...] = SPLITS,
    seeds: int = 3,
    size: str = "full",
    quality_floor: float | None = None,
    objective: str = "latency",
) -> dict:
    """Evaluates every selector on profile records (as from profiles.transfer.iter_records)."""
    return evaluate_table(
        table_from_records(records, objective=objective, quality_floor=quality_floor),
        splits=splits,
        seeds=seeds,
        size=size,
    )


__all__ = [
    "DEFAULT_QUALITY_FLOOR",
    "AdvisorModel",
    "Candidate",
    "Excluded",
    "PerfTable",
    "Recommendation",
    "RecommendationResult",
    "activate_version",
    "active_advisor",
    "compare_versions",
    "evaluate",
    "evaluate_table",
    "fit_advisor",
    "keep_comparison",
    "recommend",
    "rollback",
    "table_from_records",
    "train_advisor",
    "version_scores",
]
