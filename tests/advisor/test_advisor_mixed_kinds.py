"""Profiles of other workload kinds and model families (serving streams, encoders) share one table."""

import math

import numpy as np

from advisor.evaluate import evaluate_table
from advisor.features import task_key
from advisor.learner import MetaLearner
from advisor.metrics import choose
from advisor.table import table_from_records


def _encoder(record: dict) -> dict:
    model = {
        "id": "zoo:minilm",
        "family": "encoder",
        "params": 22_700_000,
        "layers": 6,
        "width": 384,
        "heads": 12,
        "kv_heads": 12,
        "vocab": 30522,
        "context": 512,
        "descriptors": {"pooling": "mean"},
    }
    workload = {
        "id": "wl-embed",
        "kind": "encoder-embed",
        "batch_size": 32,
        "prompt_len": 128,
        "gen_len": None,
        "sampling": "greedy",
        "objective": "latency",
        "params": {"seq_len": 128},
    }
    return record | {
        "model_id": model["id"],
        "model": model,
        "workload_id": workload["id"],
        "workload": workload,
        "run_id": "enc-" + record["run_id"],
    }


def _stream(record: dict) -> dict:
    workload = {
        "id": "wl-stream",
        "kind": "lm-stream",
        "batch_size": 8,
        "prompt_len": 80,
        "gen_len": 32,
        "sampling": "greedy",
        "objective": "throughput",
        "params": {"load": 4.0, "prompt_lens": [16, 64, 160], "shared_token_fraction": 0.5},
    }
    return record | {"workload_id": workload["id"], "workload": workload, "run_id": "st-" + record["run_id"]}


def _mixed(small_records):
    first_model = small_records[0]["model_id"]
    own = [r for r in small_records if r["model_id"] == first_model]
    failed = _stream(own[1]) | {"status": "failed", "speedup": None, "reason": "out of memory", "run_id": "f1"}
    return small_records + [_encoder(r) for r in own] + [_stream(r) for r in own[2:]] + [failed]


def test_new_kinds_and_families_become_columns_and_missing_figures_stay_nan(small_records):
    records = _mixed(small_records)
    table = table_from_records(records)
    assert len(table.tasks) == len({task_key(r) for r in records})
    names = list(table.feature_names)
    for column in (
        "workload.kind=encoder-embed",
        "workload.kind=lm-stream",
        "workload.kind=lm-generate",
        "model.family=encoder",
        "workload.p.load",
        "workload.p.shared_token_fraction",
    ):
        assert column in names
    assert not any("prompt_lens" in n for n in names)  # lists are not features
    x = dict(zip(names, table.task_x[next(i for i, t in enumerate(table.tasks) if "wl-embed" in t)], strict=True))
    assert x["workload.kind=encoder-embed"] == 1.0 and x["workload.kind=lm-generate"] == 0.0
    assert (
        math.isnan(x["workload.gen_len"]) and math.isnan(x["workload.gen_share"]) and math.isnan(x["workload.p.load"])
    )
    assert x["workload.prompt_len"] == math.log2(1 + 128) and x["workload.p.seq_len"] == 128
    assert "zoo:minilm" in set(table.groups["model"])


def test_a_failed_run_without_figures_is_unavailable_and_the_learner_never_picks_it(small_records):
    records = _mixed(small_records)
    table = table_from_records(records)
    failed = next(r for r in records if r["status"] == "failed")
    row = table.tasks.index(task_key(failed))
    col = table.candidates.index(failed["method_id"])
    assert np.isnan(table.values[row, col])
    scores = MetaLearner(n_estimators=40, learning_rate=0.1).fit(table).scores(table)
    assert np.isfinite(scores).all()
    assert choose(scores, table.available)[row] != col
    report = evaluate_table(table, splits=("model",), seeds=1, n_folds=3, size="small", selectors=("lightgbm",))
    assert report["splits"]["model"]["lightgbm"]["mean_regret"]["mean"] >= 1.0


def test_the_evaluation_reports_each_workload_kind_beside_the_pooled_figures(small_records):
    table = table_from_records(_mixed(small_records))
    report = evaluate_table(
        table, splits=("model",), seeds=1, n_folds=3, size="small", selectors=("lightgbm_plain",), with_coverage=False
    )
    per_kind = report["splits"]["model"]["_per_kind"]
    assert set(per_kind) == {"lm-generate", "encoder-embed", "lm-stream"}
    generate = (table.task_x[:, table.feature_names.index("workload.kind=lm-generate")] == 1).sum()
    assert generate < len(table.tasks)  # the kinds partition the pooled tasks
    for figures in per_kind.values():
        assert {"sbs", "lightgbm_plain", "vbs"} <= set(figures)
        assert figures["vbs"]["mean_regret"]["mean"] == 1.0
