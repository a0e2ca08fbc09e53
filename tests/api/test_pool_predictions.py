"""A pool's nodes are predicted together, each booster once for the nodes its splits tell apart
(advisor.recommend): every node must get exactly the figures it gets when asked about alone."""

from __future__ import annotations

import random

import numpy as np
import pytest

from advisor import recommend as recommending
from advisor.features import task_features
from advisor.model import fit_advisor
from advisor.recommend import recommend
from advisor.synthetic import synthetic_records
from profiles.models import workload_id_for


@pytest.fixture(scope="module")
def grid() -> tuple:
    records = list(synthetic_records(n_models=4, n_workloads=3, n_hardware=3, seed=2))
    advisor, _ = fit_advisor(records, size="small")
    return advisor, records


def _clear_caches() -> None:
    for cache in (recommending._PREDICTIONS, recommending._ANSWERS, recommending._CONTRIBUTIONS):
        cache.items.clear()


def _question(records: list[dict]) -> tuple[dict, dict]:
    """A model and a workload shape no record has, so every figure is the learner's."""
    record = records[0]
    shape = {k: record["workload"][k] for k in ("kind", "batch_size", "prompt_len", "sampling", "objective")}
    shape["gen_len"] = 45
    return record["model"], {"id": workload_id_for(shape), **shape, "params": {}}


def _pool(records: list[dict], copies: int) -> list[dict]:
    """Each profiled node, then copies of them with probe figures a few per cent apart (as nodes of one
    hardware type measure), a price each, and one with a figure missing."""
    profiled = list({r["node"]["id"]: r["node"] for r in records}.values())
    rng = random.Random(0)
    pool = list(profiled)
    for i in range(copies):
        template = profiled[i % len(profiled)]
        jitter = {k: template[k] * rng.uniform(0.95, 1.05) for k in ("mem_bw_gbs", "fp32_gflops") if template.get(k)}
        pool.append({**template, **jitter, "id": f"copy-{i}", "price_per_hour": 0.1 * i})
    pool.append({**profiled[0], "id": "no-bandwidth", "mem_bw_gbs": None})
    return pool


def test_every_node_of_a_pool_gets_the_answer_it_gets_alone(grid):
    advisor, records = grid
    model, workload = _question(records)
    pool = _pool(records, copies=12)
    _clear_caches()
    together = recommend(advisor, model, workload, pool, quality_floor=-1, explain=0)
    for node in pool:
        _clear_caches()
        alone = recommend(advisor, model, workload, [node], quality_floor=-1, explain=0)
        assert [r for r in together.recommendations if r.node_id == node["id"]] == list(alone.recommendations)
        assert [e for e in together.excluded if e.node_id == node["id"]] == [
            e for e in alone.excluded if e.node_id == node["id"]
        ]
    assert {r.basis for r in together.recommendations} >= {"interpolated"}


def test_the_explained_rows_are_the_nodes_own(grid):
    advisor, records = grid
    model, workload = _question(records)
    pool = _pool(records, copies=6)
    _clear_caches()
    explained = [r for r in recommend(advisor, model, workload, pool).recommendations if r.contributions]
    compared = 0
    for r in explained:
        _clear_caches()
        node = next(n for n in pool if n["id"] == r.node_id)
        alone = {a.method_id: a for a in recommend(advisor, model, workload, [node]).recommendations}
        if alone[r.method_id].contributions:
            assert alone[r.method_id] == r
            compared += 1
    assert compared  # the pool's best rows are their nodes' best too


def test_tasks_a_booster_cannot_tell_apart_get_the_same_prediction_bit_for_bit(grid):
    advisor, records = grid
    model, workload = _question(records)
    tasks = [task_features({"model": model, "workload": workload, "node": n}) for n in _pool(records, copies=30)]
    task_x = advisor.task_matrix(tasks)
    rng = np.random.default_rng(0)
    edited = task_x[rng.integers(0, len(task_x), 60)].copy()
    booster = advisor.learners["log_speedup"].boosters_["point"]
    splits = recommending._task_splits(booster, task_x.shape[1])
    assert splits is not None and len(splits.columns)
    for row in edited:  # values on, just above and just below thresholds, zeros, NaN: the edge cases
        k = rng.integers(0, len(splits.columns))
        threshold = rng.choice(splits.thresholds[k])
        row[splits.columns[k]] = rng.choice(
            [threshold, np.nextafter(threshold, np.inf), np.nextafter(threshold, -np.inf), 0.0, -0.0, 1e-40, np.nan]
        )
    rows = np.vstack([task_x, edited])
    first, group = recommending._same_decisions(booster, rows)
    assert len(first) < len(rows)  # nodes measured a few per cent apart do share predictions
    cand_x = advisor.candidate_matrix(advisor.candidates)
    each = advisor.learners["log_speedup"].predict(rows, cand_x)
    assert np.array_equal(each, each[first][group])
