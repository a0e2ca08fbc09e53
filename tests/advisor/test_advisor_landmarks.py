"""Landmark probes are profile records of the model's cheapest workload; their cost is the records' own time."""

import math

import numpy as np
import pytest

from advisor.evaluate import evaluate_landmarks, with_probes
from advisor.landmarks import PROBES, landmarks, probe_cost_fraction, record_seconds
from advisor.synthetic import synthetic_records
from advisor.table import table_from_records


def _timed(records):
    """Synthetic records with measuring times: setup 1 s, each repetition its latency, 5 timed + 1 warm-up."""
    out = []
    for r in records:
        latency = r.get("latency_p50_s") or r["baseline_latency_p50_s"]
        metrics = {
            "latencies_s": [latency] * 5,
            "warmup_s": [latency],
            "baseline_latencies_s": [r["baseline_latency_p50_s"]] * 5,
        }
        out.append(r | {"setup_s": 1.0, "metrics": metrics})
    return out


def test_probe_values_come_from_the_cheapest_workload_of_the_same_model_and_node():
    records = _timed(list(synthetic_records(n_models=4, n_workloads=3, n_hardware=2, seed=3)))
    table = table_from_records(records)
    values, costs, full = landmarks(records, table.tasks)
    task = table.tasks[0]
    model, _, hardware = task.split("|")
    mine = [r for r in records if r["model_id"] == model and r["hardware_class"] == hardware]
    size = lambda r: r["workload"]["batch_size"] * (r["workload"]["prompt_len"] + r["workload"]["gen_len"])  # noqa: E731
    cheapest = min(size(r) for r in mine)
    int8 = next(r for r in mine if size(r) == cheapest and r["method_id"] == "quant.int8_dynamic")
    assert values["quant.int8_dynamic"][0] == pytest.approx(math.log(int8["speedup"]))
    assert costs["quant.int8_dynamic"][0] == pytest.approx(record_seconds(int8))
    assert full[0] == pytest.approx(
        sum(record_seconds(r) for r in mine)
        + sum(
            max(5 * r["baseline_latency_p50_s"] for r in mine if r["workload_id"] == w)
            for w in {r["workload_id"] for r in mine}
        )
    )
    assert 0 < probe_cost_fraction(costs, full, PROBES[:2]) < probe_cost_fraction(costs, full, PROBES[:4]) < 1
    assert probe_cost_fraction(costs, full, ()) == 0.0
    probed = with_probes(table, values, PROBES[:2])
    assert probed.feature_names[-2:] == ("probe.baseline_latency", "probe.quant.int8_dynamic")
    assert np.array_equal(probed.task_x[:, -1], values["quant.int8_dynamic"], equal_nan=True)


def test_landmark_evaluation_reports_each_probe_count_for_every_selector():
    records = _timed(list(synthetic_records(n_models=5, n_workloads=2, n_hardware=2, seed=4)))
    table = table_from_records(records)
    out = evaluate_landmarks(table, records, counts=(1, 2), seeds=1, n_folds=3, size="small", selectors=("lightgbm",))
    assert out["order"] == list(PROBES) and set(out["by_count"]) == {"1", "2"}
    for k, found in out["by_count"].items():
        assert found["probes"] == list(PROBES[: int(k)])
        assert {"sbs", "lightgbm", "vbs"} <= set(found["results"])
