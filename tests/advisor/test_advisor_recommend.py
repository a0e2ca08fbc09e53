import math

import numpy as np
import pytest

from advisor.model import AdvisorModel, Candidate
from advisor.recommend import recommend
from advisor.synthetic import true_log_speedups


def _task(records, hardware_class, predicate=lambda r: True):
    return next(r for r in records if r["hardware_class"] == hardware_class and predicate(r))


def test_ranks_by_predicted_speedup_with_intervals_costs_and_contributions(small_advisor, small_records):
    record = _task(small_records, "cpu-8c-avx2")
    result = recommend(small_advisor, record["model"], record["workload"], [record["node"]])
    ranked = result.recommendations
    assert [r.speedup for r in ranked] == sorted((r.speedup for r in ranked), reverse=True)
    for r in ranked:
        assert r.speedup_interval[0] <= r.speedup <= r.speedup_interval[1]
        assert r.quality_interval[0] <= r.quality_delta <= r.quality_interval[1]
        assert r.cost == pytest.approx(r.runtime_s / 3600 * record["node"]["price_per_hour"])
        assert len(r.contributions) <= 5 and all(isinstance(name, str) for name, _ in r.contributions)
    assert all(r.contributions for r in ranked[:5])  # the top answers are explained
    truth = true_log_speedups(
        record["model"]["width"],
        record["workload"]["batch_size"],
        record["workload"]["prompt_len"],
        record["workload"]["gen_len"],
        record["node"]["threads"],
        gpu=False,
    )
    best_true = max((v, k) for k, v in truth.items() if v is not None)[1]
    assert best_true in [r.method_id for r in ranked[:2]]  # the advisor saw this task: it must know it


def test_never_recommends_what_never_applied_or_what_supports_rejects(small_advisor, small_records):
    record = _task(small_records, "cpu-2c-avx2")
    result = recommend(
        small_advisor,
        record["model"],
        record["workload"],
        [record["node"]],
        supports=lambda m: "needs Triton" if m == "sys.compile" else None,
    )
    chosen = {r.method_id for r in result.recommendations}
    assert "mixed.amp_bf16" not in chosen  # only ever not-applicable on CPUs in the profiles
    assert "sys.compile" not in chosen
    reasons = {e.method_id: e.reason for e in result.excluded}
    assert "needs Triton" in reasons["sys.compile"] and "not applicable" in reasons["mixed.amp_bf16"]


def test_quality_floor_and_budget_filter(small_advisor, small_records):
    record = _task(small_records, "gpu-t4")
    args = (small_advisor, record["model"], record["workload"], [record["node"]])
    everything = recommend(*args).recommendations
    floored = recommend(*args, quality_floor=-0.02)
    assert all(r.quality_delta >= -0.02 for r in floored.recommendations)
    assert "prune.struct.adapt_pruner" in {e.method_id for e in floored.excluded}  # ~ -4 % quality
    costs = sorted(r.cost for r in everything)
    budget = costs[len(costs) // 2]
    cheap = recommend(*args, budget=budget)
    assert cheap.recommendations and all(r.cost <= budget for r in cheap.recommendations)
    assert any("exceeds the budget" in e.reason for e in cheap.excluded)


def test_memory_objective_prefers_int8_and_pool_spans_nodes(small_advisor, small_records):
    record = _task(small_records, "cpu-8c-avx2")
    nodes = [record["node"], _task(small_records, "gpu-t4")["node"]]
    result = recommend(small_advisor, record["model"], record["workload"], nodes, objective="memory")
    assert {r.node_id for r in result.recommendations} == {n["id"] for n in nodes}
    assert "int8" in result.recommendations[0].method_id  # the only methods that shrink memory here
    with pytest.raises(ValueError, match="objective"):
        recommend(small_advisor, record["model"], record["workload"], nodes, objective="joy")


def test_warns_when_a_composite_is_predicted_worse_than_a_part(small_advisor, small_records):
    # Wide models: the int8 + speculative composite loses to speculative decoding alone (clearly).
    def composite_loses(r):
        truth = true_log_speedups(
            r["model"]["width"],
            r["workload"]["batch_size"],
            r["workload"]["prompt_len"],
            r["workload"]["gen_len"],
            r["node"]["threads"],
            gpu=False,
        )
        return (
            truth["lm.spec.swift"] is not None
            and truth["lm.spec.swift"] > truth["quant.int8_dynamic+lm.spec.swift"] + 0.2
        )

    record = _task(small_records, "cpu-2c-avx2", composite_loses)
    composite = Candidate("quant.int8_dynamic+lm.spec.swift", {})
    result = recommend(small_advisor, record["model"], record["workload"], [record["node"]], candidates=[composite])
    (only,) = result.recommendations
    assert any("slower than its part lm.spec.swift" in w for w in only.warnings)


def test_saved_artefacts_are_text_and_reload_to_the_same_predictions(small_advisor, small_records, tmp_path):
    small_advisor.save(tmp_path / "adv")
    files = sorted(p.name for p in (tmp_path / "adv").iterdir())
    assert files and all(name.endswith((".json", ".txt")) for name in files)
    loaded = AdvisorModel.load(tmp_path / "adv")
    record = small_records[0]
    before = recommend(small_advisor, record["model"], record["workload"], [record["node"]]).recommendations
    after = recommend(loaded, record["model"], record["workload"], [record["node"]]).recommendations
    assert [(r.method_id, r.speedup) for r in before] == [(r.method_id, r.speedup) for r in after]
    assert not math.isnan(np.mean([r.speedup for r in after]))


def test_a_model_outside_the_profiled_sizes_is_flagged_as_extrapolated(small_advisor, small_records):
    record = small_records[0]
    low, high = small_advisor.params["model_params_range"]
    assert low == min(r["model"]["params"] for r in small_records)
    inside = recommend(small_advisor, record["model"], record["workload"], [record["node"]])
    assert not any("extrapolate" in w for r in inside.recommendations for w in r.warnings)
    huge = record["model"] | {"params": 10 * high}
    outside = recommend(small_advisor, huge, record["workload"], [record["node"]])
    assert all(any("outside the profiled" in w for w in r.warnings) for r in outside.recommendations)
