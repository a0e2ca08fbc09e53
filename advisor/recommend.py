"""Recommendation under constraints: predict, filter, rank, explain.

For one model and workload on one node or a pool of nodes, every candidate gets figures from
one of three sources, named in its ``basis``:

- **measured**: the task (model, workload, hardware class) was profiled with this candidate —
  the stored medians, with the spread of the timed pairs as the interval;
- **interpolated**: the learner's prediction, with its calibrated 10–90 % interval;
- **guarded** (zero-shot): the model's size or family lies outside what the learner may
  interpolate for this workload kind (advisor.guard) — the candidate's median over the profiled
  tasks of that kind, with their 10–90 % spread, as the evaluation's guard does with the SBS.

"No acceleration" (``baseline``, basis ``reference``) is always a candidate, so it comes first
when nothing is predicted to beat it. Dropped, each with its reason: what ``supports`` rejects,
methods never measured on a workload of this kind, methods that were only ever not applicable on
the node's hardware class, a predicted quality change below the floor (DEFAULT_QUALITY_FLOOR
unless the caller sets another; -1 allows anything, with a warning on large losses) and a
predicted cost (runtime × node price) over the budget. The top ``explain`` interpolated answers
carry the features that moved their speed-up prediction most (LightGBM SHAP contributions).
Predictions are cached per advisor and task, so a repeated question costs no model evaluation.

A pool's nodes are predicted together: each booster is evaluated once for all of them, and only
for the nodes its splits tell apart. Two tasks whose features fall on the same side of every
threshold a booster compares them with reach the same leaves, so they get the same figures, bit
for bit (``_same_decisions``); nodes of one hardware type measured a few per cent apart usually
do. Tasks that every booster treats alike also share the figures derived from the predictions.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from advisor.features import BASELINE, _log2_size, task_features
from advisor.guard import DEFAULT_MARGIN, unsupported
from advisor.model import AdvisorModel, Candidate
from advisor.table import OBJECTIVES

OBJECTIVE_FIGURE = {
    "latency": "log_speedup",
    "time-to-accuracy": "log_speedup",
    "throughput": "log_throughput_ratio",
    "memory": "log_memory_ratio",
}
DEFAULT_QUALITY_FLOOR = -0.05  # a 5 % relative quality loss at most, unless the caller says otherwise
LARGE_QUALITY_LOSS = -0.05  # below this a kept answer carries a warning
ANY_QUALITY = -1.0  # a floor at or below this allows any quality change
N_CONTRIBUTIONS = 5
EXPLAINED = 3  # SHAP contributions cost ~25 ms a row: only the top recommendations carry them
CACHE_SIZE = 4096
EVERY_NODE = "*"  # the node id of an exclusion that holds on every node
QUANTILES = ("point", "q0.1", "q0.9")
# LightGBM reads a feature within this of zero as zero (its kZeroThreshold, a float32 1e-35).
ZERO_THRESHOLD = float(np.float32(1e-35))


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
    basis: str = "interpolated"  # measured | interpolated | guarded | reference
    memory_ratio: float | None = None  # baseline peak memory ÷ this candidate's (higher = less memory)
    memory_interval: tuple[float, float] | None = None
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


class _LRU:
    """A small thread-safe LRU map: the API answers from several threads."""

    def __init__(self, size: int):
        self.size, self.lock = size, threading.Lock()
        self.items: OrderedDict[Any, Any] = OrderedDict()

    def peek(self, key):
        """The value kept for ``key`` (now the most recently used), or None (no value kept is None)."""
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, value):
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value

    def get(self, key, make):
        value = self.peek(key)
        # make() runs outside the lock: two threads may compute the same value once each
        return self.put(key, make()) if value is None else value


_PREDICTIONS = _LRU(CACHE_SIZE)  # one task's _Prediction
_ANSWERS = _LRU(CACHE_SIZE)  # one node's kept and dropped candidates for one question
_CONTRIBUTIONS = _LRU(CACHE_SIZE)
_CANDIDATE_ROWS = _LRU(64)  # the candidates' feature matrix, per advisor and candidate list
# booster → the task columns its splits read and their thresholds (None: linear leaves, which read values)
_SPLITS: weakref.WeakKeyDictionary[Any, _Splits | None] = weakref.WeakKeyDictionary()
_SPLITS_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class _Question:
    """What every node's answer to one question shares."""

    model: Mapping
    workload: Mapping
    kind: str
    candidates: tuple[Candidate, ...]  # the allowed ones, in the advisor's order
    scored: tuple[Candidate, ...]  # the baseline, the candidates and the parts of composites not among them
    objective: str
    quality_floor: float | None
    budget: float | None

    @property
    def candidate_keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.candidates)


@dataclass(frozen=True, eq=False)
class _Prediction:
    """Every figure for every scored candidate of one task."""

    figures: Mapping  # (figure, "point" | "q0.1" | "q0.9") → one value per scored candidate
    task_key: tuple
    task_row: np.ndarray
    candidate_rows: np.ndarray

    def row(self, j: int) -> np.ndarray:
        """The learner's input row for scored candidate ``j`` (what its contributions explain)."""
        return np.concatenate([self.task_row, self.candidate_rows[j]])


@dataclass(frozen=True)
class _Splits:
    columns: np.ndarray  # task columns compared with thresholds
    thresholds: tuple[np.ndarray, ...]  # each column's thresholds, sorted
    exact: np.ndarray  # task columns a categorical split reads: only equal values go the same way


def recommend(
    advisor: AdvisorModel,
    model: Mapping,
    workload: Mapping,
    nodes: Sequence[Mapping],
    candidates: Sequence[Candidate] | None = None,
    supports: Callable[[str], str | None] | None = None,
    quality_floor: float | None = DEFAULT_QUALITY_FLOOR,
    budget: float | None = None,
    objective: str = "latency",
    top_k: int | None = None,
    explain: int = EXPLAINED,
) -> RecommendationResult:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if not nodes:
        raise ValueError("no node to recommend for")
    figure = OBJECTIVE_FIGURE[objective]
    if figure not in advisor.learners:
        raise ValueError(f"this advisor was trained without {figure} data, so it cannot rank by {objective}")
    candidates = [c for c in (candidates if candidates is not None else advisor.candidates) if c.method_id != BASELINE]
    excluded: list[Excluded] = []
    kind = workload.get("kind") or "lm-generate"
    allowed = []
    for c in candidates:
        reason = supports(c.method_id) if supports is not None else None
        reason = reason or _not_measured_on(advisor, c.method_id, kind)
        if reason is None:
            allowed.append(c)
        else:
            excluded.append(Excluded(c.method_id, EVERY_NODE, reason))
    question = _Question(
        model,
        workload,
        kind,
        tuple(allowed),
        # Parts of composites are predicted too, so "worse than its part" can be checked; the baseline row
        # gives the baseline's runtime.
        (Candidate(BASELINE, {}), *allowed, *_parts_missing(allowed)),
        objective,
        quality_floor,
        budget,
    )
    results: list[tuple[Recommendation, tuple | None]] = []
    for kept, dropped in _for_nodes(advisor, question, nodes):
        results += kept
        excluded += dropped
    results.sort(key=lambda pair: -pair[0].objective_ratio)  # stable: "no acceleration" first on a tie
    results = results[:top_k] if top_k else results
    return RecommendationResult(_explained(advisor, results, explain), tuple(excluded))


def _not_measured_on(advisor: AdvisorModel, method_id: str, kind: str) -> str | None:
    kinds = advisor.facts.get("kinds")
    if not kinds or kind in kinds.get(method_id, ()):
        return None
    measured = ", ".join(kinds.get(method_id, ())) or "no kind"
    return f"not measured on any {kind} workload (profiled on: {measured}); it is ranked only where it applies"


def _task_key(advisor: AdvisorModel, features: Mapping) -> tuple:
    return (advisor.params.get("data_hash"), json.dumps(features, sort_keys=True, default=str))


def _predictions(advisor: AdvisorModel, question: _Question, tasks: Sequence[dict]) -> list[_Prediction]:
    """Every figure for every scored candidate of each task: computed once per advisor and task, the
    tasks not seen before all together."""
    scored_keys = tuple(c.key for c in question.scored)
    task_keys = [_task_key(advisor, features) for features in tasks]
    found = [_PREDICTIONS.peek((*key, scored_keys)) for key in task_keys]
    missing = [i for i, prediction in enumerate(found) if prediction is None]
    if missing:
        task_x = advisor.task_matrix([tasks[i] for i in missing])
        cand_x = _CANDIDATE_ROWS.get(
            (advisor.params.get("data_hash"), scored_keys), lambda: advisor.candidate_matrix(question.scored)
        )
        for i, row, figures in zip(missing, task_x, _predicted(advisor, task_x, cand_x), strict=True):
            found[i] = _PREDICTIONS.put((*task_keys[i], scored_keys), _Prediction(figures, task_keys[i], row, cand_x))
    return found


def _predicted(advisor: AdvisorModel, task_x: np.ndarray, cand_x: np.ndarray) -> list[dict]:
    """Each task's figures: every booster evaluated once, on one task of each group it cannot tell
    apart. Tasks that no booster tells apart get the same dict."""
    values: dict[tuple[str, str], np.ndarray] = {}
    groups = []
    for name, learner in advisor.learners.items():
        for which in QUANTILES:
            if which in learner.boosters_:
                first, group = _same_decisions(learner.boosters_[which], task_x)
                values[(name, which)] = learner.predict(task_x[first], cand_x, which)[group]
                groups.append(group)
    _, representatives, alike = np.unique(np.stack(groups, axis=1), axis=0, return_index=True, return_inverse=True)
    shared = [{key: figure[t] for key, figure in values.items()} for t in representatives]
    return [shared[a] for a in alike.reshape(-1)]


def _same_decisions(booster: Any, task_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups of tasks the booster cannot tell apart: the first task of each group, and each task's group.

    A numerical split sends a value left when it is at most the threshold; a missing value (NaN, or
    one within ZERO_THRESHOLD of zero, by the split's missing type) goes a fixed way. So the number
    of thresholds below a value, whether it is NaN and whether it counts as zero decide every
    numerical split on that column (whether or not LightGBM reads a value that close to zero as zero:
    two such values below the same thresholds go the same way either way); categorical splits are
    decided by equal values.
    """
    everyone = np.arange(len(task_x))
    splits = _task_splits(booster, task_x.shape[1])
    if splits is None:
        return everyone, everyone
    compared = task_x[:, splits.columns]
    codes = np.empty(compared.shape, dtype=np.int64)
    for k, thresholds in enumerate(splits.thresholds):
        codes[:, k] = 2 * np.searchsorted(thresholds, compared[:, k], side="left")
    codes += np.abs(compared) <= ZERO_THRESHOLD
    codes[np.isnan(compared)] = -1
    exact = task_x[:, splits.exact]
    exact = np.where(np.isnan(exact), np.nan, exact).view(np.int64)  # one bit pattern for every NaN
    _, first, group = np.unique(np.hstack([codes, exact]), axis=0, return_index=True, return_inverse=True)
    return first, group.reshape(-1)


def _task_splits(booster: Any, n_task_columns: int) -> _Splits | None:
    """The task columns the booster's splits read, from its model text (read once per booster)."""
    with _SPLITS_LOCK:
        if booster in _SPLITS:
            return _SPLITS[booster]
    features: list[int] = []
    thresholds: list[float] = []
    decisions: list[int] = []
    linear = False
    for line in booster.model_to_string().splitlines():
        if line == "end of trees":
            break
        name, _, value = line.partition("=")
        if name == "split_feature":
            features += map(int, value.split())
        elif name == "threshold":
            thresholds += map(float, value.split())
        elif name == "decision_type":
            decisions += map(int, value.split())
        elif name == "is_linear":
            linear = linear or value.strip() != "0"
    splits = None
    if not linear:  # linear leaves read the values themselves: no two different tasks are sure to agree
        compared: dict[int, set[float]] = {}
        exact: set[int] = set()
        for feature, threshold, decision in zip(features, thresholds, decisions, strict=True):
            if feature >= n_task_columns:
                continue  # a candidate column: the same for every task
            if decision & 1:  # categorical: the threshold indexes a category set
                exact.add(feature)
            else:
                compared.setdefault(feature, set()).add(threshold)
        columns = sorted(compared)
        splits = _Splits(
            np.array(columns, dtype=np.intp),
            tuple(np.array(sorted(compared[c])) for c in columns),
            np.array(sorted(exact), dtype=np.intp),
        )
    with _SPLITS_LOCK:
        _SPLITS[booster] = splits
    return splits


def _explained(advisor: AdvisorModel, results: list, explain: int) -> tuple[Recommendation, ...]:
    names = advisor.feature_names()
    out, budget = [], explain
    for recommendation, source in results:
        if source is None or budget <= 0:
            out.append(recommendation)
            continue
        budget -= 1
        cache_key, prediction, j = source

        def compute(prediction=prediction, j=j):
            return advisor.learners["log_speedup"].contributions(prediction.row(j)[None, :])[0]

        effects = _CONTRIBUTIONS.get(cache_key, compute)
        top = np.argsort(-np.abs(effects[:-1]))[:N_CONTRIBUTIONS]  # the last column is the bias
        contributions = tuple((names[k], float(effects[k])) for k in top if effects[k] != 0)
        out.append(replace(recommendation, contributions=contributions))
    return tuple(out)


def _parts_missing(candidates: Sequence[Candidate]) -> list[Candidate]:
    known = {c.method_id for c in candidates}
    parts = {p for c in candidates if "+" in c.method_id for p in c.method_id.split("+")}
    return [Candidate(p, {}) for p in sorted(parts - known)]


def guarded_reason(advisor: AdvisorModel, model: Mapping, kind: str) -> str | None:
    """Why the learner may not interpolate for this model and kind, or None (the guard of advisor.guard)."""
    support = advisor.facts.get("support")
    if not support:
        return None
    family = model.get("family")
    if family and support["families"] and family not in support["families"]:
        return f"no {family} model was profiled"
    sizes = support["sizes"].get(kind)
    if sizes is None:
        return f"no {kind} workload was profiled"
    size = _log2_size(model.get("params") or None)
    if size is not None and unsupported(np.array([size]), np.array(sizes), DEFAULT_MARGIN)[0]:
        profiled = ", ".join(f"{2**s - 1:,.0f}" for s in sizes)
        return (
            f"the model's {model['params']:,} parameters lie outside the sizes profiled for {kind} "
            f"workloads ({profiled}) that the advisor may interpolate between"
        )
    return None


def _regime(advisor: AdvisorModel, model: Mapping, hardware_class: str | None) -> str:
    """Which evaluation split a task resembles: it picks the interval calibration (advisor.intervals)."""
    if model.get("id") not in advisor.facts.get("models", ()):
        return "model"
    if hardware_class not in advisor.facts.get("hardware_classes", ()):
        return "hardware"
    return "random"


def _interval(advisor: AdvisorModel, preds: dict, figure: str, j: int, regime: str) -> tuple[float, float, float]:
    """Point and calibrated 10–90 % bounds of one figure (in the learner's units)."""
    point = float(preds[(figure, "point")][j])
    if (figure, "q0.1") not in preds:
        return point, point, point
    offset = float(advisor.facts.get("calibration", {}).get(figure, {}).get(regime, 0.0))
    low, high = float(preds[(figure, "q0.1")][j]) - offset, float(preds[(figure, "q0.9")][j]) + offset
    # Separately trained quantile models can cross each other or miss the point estimate.
    return point, min(point, low, high), max(point, low, high)


def _for_nodes(advisor: AdvisorModel, question: _Question, nodes: Sequence[Mapping]) -> list[tuple[list, list]]:
    """Each node's kept and dropped candidates, in the nodes' order; those not answered before are
    predicted together (_predictions), and nodes with the same predictions and hardware class share
    the figures derived from them."""
    model, workload = question.model, question.workload
    tasks: list[dict] = [task_features({"model": model, "workload": workload, "node": node}) for node in nodes]
    keys = [
        (
            *_task_key(advisor, features),
            question.candidate_keys,
            question.objective,
            question.quality_floor,
            question.budget,
            json.dumps([model.get("id"), workload.get("id"), node["id"], node.get("hardware_class")], default=str),
            node.get("price_per_hour"),
        )
        for node, features in zip(nodes, tasks, strict=True)
    ]
    answers = [_ANSWERS.peek(key) for key in keys]
    todo = [i for i, answer in enumerate(answers) if answer is None]
    if todo:
        if advisor.params.get("text_embedding"):
            from advisor.embedding import task_description, text_features

            for i in todo:
                description = task_description({"model": model, "workload": workload, "node": nodes[i]})
                tasks[i] = tasks[i] | text_features(description)
        predictions = _predictions(advisor, question, [tasks[i] for i in todo])
        guard = guarded_reason(advisor, model, question.kind)
        derived: dict[tuple[int, str | None], tuple] = {}  # (id of the predictions, hardware class) → figures
        for i, prediction in zip(todo, predictions, strict=True):
            hardware_class = nodes[i].get("hardware_class")
            shared = (id(prediction.figures), hardware_class)
            if shared not in derived:
                derived[shared] = _task_figures(advisor, question, guard, hardware_class, prediction.figures)
            answers[i] = _ANSWERS.put(keys[i], _answer(advisor, question, guard, nodes[i], prediction, derived[shared]))
    return answers


def _task_figures(advisor, question: _Question, guard, hardware_class, preds) -> tuple[dict, dict, float | None]:
    """Every scored candidate's figures on one task, the parts' speed-ups and the baseline's runtime."""
    model, workload, scored = question.model, question.workload, question.scored
    regime = _regime(advisor, model, hardware_class)
    task_id = "|".join((str(model.get("id")), str(workload.get("id")), str(hardware_class)))
    measured = advisor.facts.get("measured", {}).get(task_id, {})
    zero_shot = advisor.facts.get("zero_shot", {}).get(question.kind, {})
    runtime = None
    if "log_baseline_latency" in advisor.learners:
        runtime = float(np.exp(preds[("log_baseline_latency", "point")][0]))
    figures = {
        c.key: _figures(advisor, preds, j, c, measured, zero_shot, guard, regime) for j, c in enumerate(scored) if j
    }
    speed_of = {c.method_id: figures[c.key]["speedup"] for c in scored[1:] if not c.config and figures[c.key]}
    return figures, speed_of, runtime


def _answer(advisor, question: _Question, guard, node, prediction: _Prediction, task_figures: tuple):
    figures, speed_of, runtime = task_figures
    objective, quality_floor, budget, kind = question.objective, question.quality_floor, question.budget, question.kind
    price = float(node.get("price_per_hour") or 0.0)
    never_applied = set(advisor.inapplicable.get(node.get("hardware_class", ""), ()))
    reference = _reference(node, objective, runtime, price, guard)
    kept: list[tuple[Recommendation, tuple | None]] = []
    dropped = []
    if budget is not None and (reference.cost is None or reference.cost > budget):
        dropped.append(Excluded(BASELINE, node["id"], "running without acceleration exceeds the budget"))
    else:
        kept.append((reference, None))
    for j, c in enumerate(question.candidates, start=1):
        f = figures[c.key]
        reason = _exclusion(c, f, never_applied, node, quality_floor, budget, runtime, price)
        if reason:
            dropped.append(Excluded(c.method_id, node["id"], reason))
            continue
        warnings = [
            f"predicted {f['speedup']:.2f}x is slower than its part {p} alone ({speed_of[p]:.2f}x)"
            for p in c.method_id.split("+")
            if "+" in c.method_id and speed_of.get(p, 0) > f["speedup"]
        ]
        if f["speedup"] < 1.0:
            warnings.append(f"{_said(f['basis'])} slower than running without acceleration ({f['speedup']:.2f}x)")
        if f["quality_delta"] < LARGE_QUALITY_LOSS:
            warnings.append(f"LARGE QUALITY LOSS: {_said(f['basis'])} {100 * f['quality_delta']:+.0f} % quality")
        if f["basis"] == "guarded":
            warnings.append(f"zero-shot: {guard}; figures are this method's median over profiled {kind} tasks")
        task_runtime = None if runtime is None else runtime / f["speedup"]
        recommendation = Recommendation(
            method_id=c.method_id,
            config=dict(c.config),
            node_id=node["id"],
            objective=objective,
            objective_ratio=f["objective"].get(objective, f["speedup"]),
            speedup=f["speedup"],
            speedup_interval=f["speedup_interval"],
            quality_delta=f["quality_delta"],
            quality_interval=f["quality_interval"],
            runtime_s=task_runtime,
            cost=None if task_runtime is None else task_runtime / 3600.0 * price,
            basis=f["basis"],
            memory_ratio=f.get("memory_ratio"),
            memory_interval=f.get("memory_interval"),
            warnings=tuple(warnings),
        )
        source = ((*prediction.task_key, c.key), prediction, j) if f["basis"] == "interpolated" else None
        kept.append((recommendation, source))
    return kept, dropped


def _said(basis: str) -> str:
    return "measured" if basis == "measured" else "predicted"


def _reference(node, objective, runtime, price, guard) -> Recommendation:
    return Recommendation(
        method_id=BASELINE,
        config={},
        node_id=node["id"],
        objective=objective,
        objective_ratio=1.0,
        speedup=1.0,
        speedup_interval=(1.0, 1.0),
        quality_delta=0.0,
        quality_interval=(0.0, 0.0),
        runtime_s=runtime,
        cost=None if runtime is None else runtime / 3600.0 * price,
        basis="reference",
        memory_ratio=1.0,
        memory_interval=(1.0, 1.0),
        warnings=() if guard is None else (f"zero-shot: {guard}",),
    )


def _exclusion(c, f, never_applied, node, quality_floor, budget, runtime, price) -> str | None:
    if c.method_id in never_applied:
        return f"every stored run on hardware class {node.get('hardware_class')} was not applicable"
    if not f:
        return "no figures: it was never measured on a task of this kind"
    # -1 (a 100 % loss) means "any": a perplexity can more than double, a relative change below -1.
    if quality_floor is not None and quality_floor > ANY_QUALITY and f["quality_delta"] < quality_floor:
        return (
            f"{_said(f['basis'])} quality change {f['quality_delta']:+.3f} is below the floor {quality_floor:+.3f}"
            + (
                " (the default; set quality_floor to -1 to allow any loss)"
                if quality_floor == DEFAULT_QUALITY_FLOOR
                else ""
            )
        )
    if budget is not None:
        if runtime is None:
            return "no runtime prediction"
        cost = runtime / f["speedup"] / 3600.0 * price
        if cost > budget:
            return f"predicted cost {cost:.3g} exceeds the budget {budget:.3g}"
    return None


def _figures(advisor, preds, j, c, measured, zero_shot, guard, regime) -> dict:
    """Speed-up, quality, memory and the objective ratios of one candidate, from its basis."""
    cell = measured.get(c.key)
    if cell is not None:
        speedup = math.exp(cell["log_speedup"])
        low, high = cell["speedup_range"]
        quality = cell.get("quality_delta", 0.0)
        return _pack(
            "measured",
            speedup,
            (min(low, speedup), max(high, speedup)),
            (quality, quality, quality),
            _point3(cell.get("log_memory_ratio")),
            {
                "throughput": math.exp(cell.get("log_throughput_ratio", cell["log_speedup"])),
                "memory": math.exp(cell.get("log_memory_ratio", 0.0)),
            },
        )
    if guard is not None:
        cell = zero_shot.get(c.key)
        if cell is None or "log_speedup" not in cell:
            return {}
        return _pack(
            "guarded",
            math.exp(cell["log_speedup"]),
            tuple(math.exp(v) for v in cell["log_speedup_interval"]),
            (cell.get("quality_delta", 0.0), *cell.get("quality_delta_interval", (0.0, 0.0))),
            None if "log_memory_ratio" not in cell else (cell["log_memory_ratio"], *cell["log_memory_ratio_interval"]),
            {
                "throughput": math.exp(cell.get("log_throughput_ratio", cell["log_speedup"])),
                "memory": math.exp(cell.get("log_memory_ratio", 0.0)),
            },
        )
    point, low, high = _interval(advisor, preds, "log_speedup", j, regime)
    memory = (
        _interval(advisor, preds, "log_memory_ratio", j, regime) if "log_memory_ratio" in advisor.learners else None
    )
    ratios = {}
    for objective, figure in (("throughput", "log_throughput_ratio"), ("memory", "log_memory_ratio")):
        if (figure, "point") in preds:
            ratios[objective] = math.exp(float(preds[(figure, "point")][j]))
    return _pack(
        "interpolated",
        math.exp(point),
        (math.exp(low), math.exp(high)),
        _interval(advisor, preds, "quality_delta", j, regime),
        memory,
        ratios,
    )


def _point3(value):
    return None if value is None else (value, value, value)


def _pack(basis, speedup, speedup_interval, quality, memory, ratios) -> dict:
    out = {
        "basis": basis,
        "speedup": float(speedup),
        "speedup_interval": (float(speedup_interval[0]), float(speedup_interval[1])),
        "quality_delta": float(quality[0]),
        "quality_interval": (float(min(quality)), float(max(quality))),
        "objective": {"latency": float(speedup), "time-to-accuracy": float(speedup), **ratios},
    }
    if memory is not None:
        out["memory_ratio"] = float(math.exp(memory[0]))
        out["memory_interval"] = (float(math.exp(min(memory))), float(math.exp(max(memory))))
    return out
