"""Recommendation under constraints: predict, filter, rank, explain.

For one model and workload on one node or a pool of nodes: drop candidates the caller's
``supports`` check rejects, those whose predicted quality change is below the floor and those
whose predicted cost (runtime × node price) exceeds the budget; rank the rest by the objective.
Each answer carries its intervals, cost, warnings (e.g. a composite predicted to be worse
than one of its parts) and, for the top EXPLAINED answers, the features that moved its
speed-up prediction most (LightGBM per-prediction SHAP contributions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from advisor.features import task_features
from advisor.learner import pair_matrix
from advisor.model import AdvisorModel, Candidate
from advisor.table import OBJECTIVES

OBJECTIVE_FIGURE = {
    "latency": "log_speedup",
    "time-to-accuracy": "log_speedup",
    "throughput": "log_throughput_ratio",
    "memory": "log_memory_ratio",
}
N_CONTRIBUTIONS = 5
EXPLAINED = 5  # SHAP contributions cost ~25 ms a row: only the top recommendations carry them


@dataclass(frozen=True)
class Recommendation:
    method_id: str
    config: Mapping
    node_id: str
    objective: str
    objective_ratio: float  # predicted ratio vs baseline for the objective (higher is better)
    speedup: float
    speedup_interval: tuple[float, float]
    quality_delta: float
    quality_interval: tuple[float, float]
    runtime_s: float | None
    cost: float | None  # runtime × the node's price per hour, in the price's currency
    warnings: tuple[str, ...] = ()
    contributions: tuple[tuple[str, float], ...] = ()  # (feature, effect on log speed-up), top ones only


@dataclass(frozen=True)
class Excluded:
    method_id: str
    node_id: str
    reason: str


@dataclass(frozen=True)
class RecommendationResult:
    recommendations: tuple[Recommendation, ...]
    excluded: tuple[Excluded, ...] = field(default_factory=tuple)


def recommend(
    advisor: AdvisorModel,
    model: Mapping,
    workload: Mapping,
    nodes: Sequence[Mapping],
    candidates: Sequence[Candidate] | None = None,
    supports: Callable[[str], str | None] | None = None,
    quality_floor: float | None = None,
    budget: float | None = None,
    objective: str = "latency",
    top_k: int | None = None,
) -> RecommendationResult:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if not nodes:
        raise ValueError("no node to recommend for")
    figure = OBJECTIVE_FIGURE[objective]
    if figure not in advisor.learners:
        raise ValueError(f"this advisor was trained without {figure} data, so it cannot rank by {objective}")
    candidates = list(candidates if candidates is not None else advisor.candidates)
    excluded: list[Excluded] = []
    if supports is not None:
        allowed = []
        for c in candidates:
            reason = supports(c.method_id)
            if reason is None:
                allowed.append(c)
            else:
                excluded += [Excluded(c.method_id, n["id"], f"not supported: {reason}") for n in nodes]
        candidates = allowed
    results: list[tuple[Recommendation, np.ndarray]] = []
    for node in nodes:
        kept, dropped = _for_node(advisor, model, workload, node, candidates, figure, objective, quality_floor, budget)
        results += kept
        excluded += dropped
    results.sort(key=lambda pair: -pair[0].objective_ratio)
    results = results[:top_k] if top_k else results
    return RecommendationResult(_explained(advisor, results), tuple(excluded))


def _explained(advisor: AdvisorModel, results: list[tuple[Recommendation, np.ndarray]]) -> tuple[Recommendation, ...]:
    if not results:
        return ()
    shown = results[:EXPLAINED]
    contributions = advisor.learners["log_speedup"].contributions(np.vstack([row for _, row in shown]))
    names = advisor.feature_names()
    explained = []
    for (recommendation, _), effects in zip(shown, contributions):
        top = np.argsort(-np.abs(effects[:-1]))[:N_CONTRIBUTIONS]  # the last column is the bias
        explained.append(
            replace(recommendation, contributions=tuple((names[k], float(effects[k])) for k in top if effects[k] != 0))
        )
    return tuple(explained) + tuple(r for r, _ in results[EXPLAINED:])


def _parts_missing(candidates: Sequence[Candidate]) -> list[Candidate]:
    known = {c.method_id for c in candidates}
    parts = {p for c in candidates if "+" in c.method_id for p in c.method_id.split("+")}
    return [Candidate(p, {}) for p in sorted(parts - known)]


def _for_node(advisor, model, workload, node, candidates, figure, objective, quality_floor, budget):
    # Parts of composites are predicted too, so "worse than its part" can be checked.
    scored = list(candidates) + _parts_missing(candidates)
    task = {"model": model, "workload": workload, "node": node}
    features = task_features(task)
    if advisor.params.get("text_embedding"):
        from advisor.embedding import task_description, text_features

        features.update(text_features(task_description(task)))
    task_x = advisor.task_matrix([features])
    cand_x = advisor.candidate_matrix(scored)
    log_speedup = {w: advisor.predict("log_speedup", task_x, cand_x, w)[0] for w in ("point", "q0.1", "q0.9")}
    quality = {w: advisor.predict("quality_delta", task_x, cand_x, w)[0] for w in ("point", "q0.1", "q0.9")}
    ratio = np.exp(advisor.predict(figure, task_x, cand_x)[0])
    rows = pair_matrix(task_x, cand_x)
    runtime = None
    if "log_baseline_latency" in advisor.learners:
        runtime = np.exp(advisor.predict("log_baseline_latency", task_x, cand_x)[0]) / np.exp(log_speedup["point"])
    speed_of = {c.method_id: math.exp(log_speedup["point"][j]) for j, c in enumerate(scored) if not c.config}
    kept, dropped = [], []
    extrapolated = _outside_profiled_sizes(advisor, model)
    never_applied = set(advisor.inapplicable.get(node.get("hardware_class", ""), ()))
    for j, c in enumerate(candidates):
        if c.method_id in never_applied:
            dropped.append(
                Excluded(
                    c.method_id,
                    node["id"],
                    f"every stored run on hardware class {node.get('hardware_class')} was not applicable",
                )
            )
            continue
        cost = None if runtime is None else float(runtime[j]) / 3600.0 * float(node.get("price_per_hour") or 0.0)
        if quality_floor is not None and quality["point"][j] < quality_floor:
            dropped.append(
                Excluded(
                    c.method_id,
                    node["id"],
                    f"predicted quality change {quality['point'][j]:+.3f} is below the floor {quality_floor:+.3f}",
                )
            )
            continue
        if budget is not None and (cost is None or cost > budget):
            why = (
                "no runtime prediction"
                if cost is None
                else f"predicted cost {cost:.3g} exceeds the budget {budget:.3g}"
            )
            dropped.append(Excluded(c.method_id, node["id"], why))
            continue
        speedup = math.exp(log_speedup["point"][j])
        warnings = [
            f"predicted {speedup:.2f}x is slower than its part {p} alone ({speed_of[p]:.2f}x)"
            for p in c.method_id.split("+")
            if "+" in c.method_id and speed_of.get(p, 0) > speedup
        ]
        if speedup < 1.0:
            warnings.append(f"predicted slower than running without acceleration ({speedup:.2f}x)")
        warnings += extrapolated
        kept.append(
            (
                Recommendation(
                    method_id=c.method_id,
                    config=dict(c.config),
                    node_id=node["id"],
                    objective=objective,
                    objective_ratio=float(ratio[j]),
                    speedup=speedup,
                    speedup_interval=_interval(
                        speedup, math.exp(log_speedup["q0.1"][j]), math.exp(log_speedup["q0.9"][j])
                    ),
                    quality_delta=float(quality["point"][j]),
                    quality_interval=_interval(
                        float(quality["point"][j]), float(quality["q0.1"][j]), float(quality["q0.9"][j])
                    ),
                    runtime_s=None if runtime is None else float(runtime[j]),
                    cost=cost,
                    warnings=tuple(warnings),
                ),
                rows[j],
            )
        )
    return kept, dropped


def _outside_profiled_sizes(advisor: AdvisorModel, model: Mapping) -> list[str]:
    low, high = advisor.params.get("model_params_range") or (None, None)
    params = model.get("params")
    if low is None or not params or low <= params <= high:
        return []
    return [
        (
            f"the model's {params:,} parameters lie outside the profiled {low:,}–{high:,}: "
            "the figures extrapolate (the evaluation's unseen-model split measures how well)"
        )
    ]


def _interval(point: float, low: float, high: float) -> tuple[float, float]:
    # Separately trained quantile models can cross each other or miss the point estimate.
    return (min(point, low, high), max(point, low, high))
