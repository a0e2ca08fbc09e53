import math

import numpy as np
import pytest

from advisor.model import AdvisorModel, Candidate, fit_advisor
from advisor.recommend import DEFAULT_QUALITY_FLOOR, EXPLAINED, LARGE_QUALITY_LOSS, recommend
from advisor.synthetic import true_log_speedups
from profiles.models import workload_id_for


def _task(records, hardware_class, predicate=lambda r: True):
    return next(r for r in records if r["hardware_class"] == hardware_class and predicate(r))


def _unprofiled(record, gen_len=48):
    """The same model and node with a workload shape no record has: the learner must interpolate."""
    shape = {k: record["workload"][k] for k in ("kind", "batch_size", "prompt_len", "sampling", "objective")}
    shape["gen_len"] = gen_len
    return {"id": workload_id_for(shape), **shape, "params": {}}


def test_ranks_interpolated_predictions_with_intervals_costs_and_contributions(small_advisor, small_records):
    record = _task(small_records, "cpu-8c-avx2")
    workload = _unprofiled(record)
    result = recommend(small_advisor, record["model"], workload, [record["node"]])
    ranked = result.recommendations
    assert [r.objective_ratio for r in ranked] == sorted((r.objective_ratio for r in ranked), reverse=True)
    assert {r.basis for r in ranked} == {"interpolated", "reference"}
    for r in ranked:
        assert r.speedup_interval[0] <= r.speedup <= r.speedup_interval[1]
        assert r.quality_interval[0] <= r.quality_delta <= r.quality_interval[1]
        assert r.cost == pytest.approx(r.runtime_s / 3600 * record["node"]["price_per_hour"])
        assert len(r.contributions) <= 5 and all(isinstance(name, str) for name, _ in r.contributions)
    learnt = [r for r in ranked if r.basis == "interpolated"]
    assert all(r.contributions for r in learnt[:EXPLAINED]) and not any(r.contributions for r in learnt[EXPLAINED:])
    truth = true_log_speedups(
        record["model"]["width"],
        workload["batch_size"],
        workload["prompt_len"],
        workload["gen_len"],
        record["node"]["threads"],
        gpu=False,
    )
    best_true = max((v, k) for k, v in truth.items() if v is not None)[1]
    assert best_true in [r.method_id for r in ranked[:2]]  # other gen lengths of this task were profiled


def test_a_profiled_task_answers_with_its_measurements(small_advisor, small_records):
    record = _task(small_records, "cpu-8c-avx2", lambda r: r["status"] == "ok" and r["method_id"] != "baseline")
    result = recommend(small_advisor, record["model"], record["workload"], [record["node"]], quality_floor=-1)
    (answer,) = [r for r in result.recommendations if r.method_id == record["method_id"]]
    assert answer.basis == "measured" and answer.speedup == pytest.approx(record["speedup"])
    assert answer.speedup_interval[0] <= record["speedup"] <= answer.speedup_interval[1]
    assert answer.quality_delta == pytest.approx(record["quality_delta"])


def test_no_acceleration_is_always_a_candidate_and_wins_when_nothing_beats_it(small_advisor, small_records):
    record = _task(small_records, "cpu-2c-avx2")
    result = recommend(small_advisor, record["model"], _unprofiled(record), [record["node"]])
    (reference,) = [r for r in result.recommendations if r.method_id == "baseline"]
    assert reference.basis == "reference" and reference.speedup == 1.0 and reference.quality_delta == 0.0
    slow = [c for c in small_advisor.candidates if c.method_id == "attn.double_sparsity"]
    only_slow = recommend(small_advisor, record["model"], _unprofiled(record), [record["node"]], candidates=slow)
    if all(r.speedup < 1 for r in only_slow.recommendations if r.method_id != "baseline"):
        assert only_slow.recommendations[0].method_id == "baseline"


def test_default_quality_floor_drops_large_losses_and_minus_one_keeps_them_with_a_warning(small_advisor, small_records):
    record = _task(small_records, "gpu-t4")
    lossy = small_advisor.facts["measured"]
    assert lossy  # profiled tasks carry their measured cells
    args = (small_advisor, record["model"], _unprofiled(record), [record["node"]])
    default = recommend(*args)
    assert all(r.quality_delta >= DEFAULT_QUALITY_FLOOR for r in default.recommendations)
    anything = recommend(*args, quality_floor=-1)
    assert len(anything.recommendations) >= len(default.recommendations)
    assert len(anything.recommendations) == len(recommend(*args, quality_floor=None).recommendations)
    for r in anything.recommendations:
        assert (r.quality_delta < LARGE_QUALITY_LOSS) == any("LARGE QUALITY LOSS" in w for w in r.warnings)


def test_a_method_is_ranked_only_for_workload_kinds_it_was_measured_on(small_records):
    stream = [r for r in small_records if r["method_id"] in ("baseline", "quant.int8_dynamic", "lm.spec.swift")]
    streamed = [
        r | {"workload": r["workload"] | {"kind": "lm-stream"}} for r in stream if r["method_id"] != "lm.spec.swift"
    ]
    advisor, _ = fit_advisor(small_records + streamed, size="small")
    record = streamed[0]
    result = recommend(advisor, record["model"], _unprofiled(record) | {"kind": "lm-stream"}, [record["node"]])
    chosen = {r.method_id for r in result.recommendations}
    assert "quant.int8_dynamic" in chosen and "lm.spec.swift" not in chosen
    reasons = {e.method_id: e.reason for e in result.excluded}
    assert "not measured on any lm-stream workload" in reasons["lm.spec.swift"]


def test_repeated_questions_are_answered_from_the_cache(small_advisor, small_records, monkeypatch):
    record = _task(small_records, "cpu-8c-avx2")
    workload = _unprofiled(record, gen_len=40)
    first = recommend(small_advisor, record["model"], workload, [record["node"]])
    calls = []
    for learner in small_advisor.learners.values():
        monkeypatch.setattr(learner, "predict", lambda *a, **k: calls.append(a))
        monkeypatch.setattr(learner, "contributions", lambda *a, **k: calls.append(a))
    second = recommend(small_advisor, record["model"], workload, [record["node"]])
    assert calls == [] and second == first


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
    args = (small_advisor, record["model"], _unprofiled(record), [record["node"]])
    everything = recommend(*args).recommendations
    floored = recommend(*args, quality_floor=-0.02)
    assert all(r.quality_delta >= -0.02 for r in floored.recommendations)
    assert "prune.struct.adapt_pruner" in {e.method_id for e in floored.excluded}  # ~ -4 % quality
    costs = sorted(r.cost for r in everything if r.cost is not None)
    assert len(costs) == len(everything)  # the node has a price: every answer has a cost
    budget = costs[len(costs) // 2]
    cheap = recommend(*args, budget=budget)
    assert cheap.recommendations and all(r.cost <= budget for r in cheap.recommendations)
    assert any("exceeds the budget" in e.reason for e in cheap.excluded)


def test_memory_objective_prefers_int8_and_pool_spans_nodes(small_advisor, small_records):
    record = _task(small_records, "cpu-8c-avx2")
    nodes = [record["node"], _task(small_records, "gpu-t4")["node"]]
    result = recommend(small_advisor, record["model"], _unprofiled(record), nodes, objective="memory")
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
    result = recommend(small_advisor, record["model"], _unprofiled(record), [record["node"]], candidates=[composite])
    (only,) = [r for r in result.recommendations if r.method_id != "baseline"]
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


def test_a_model_outside_the_profiled_sizes_gets_zero_shot_figures_and_says_so(small_advisor, small_records):
    record = small_records[0]
    low, high = small_advisor.params["model_params_range"]
    assert low == min(r["model"]["params"] for r in small_records)
    inside = recommend(small_advisor, record["model"], _unprofiled(record), [record["node"]])
    assert {r.basis for r in inside.recommendations} <= {"interpolated", "reference"}
    huge = record["model"] | {"id": "huge", "params": 10 * high}
    outside = recommend(small_advisor, huge, _unprofiled(record), [record["node"]], quality_floor=-1)
    assert {r.basis for r in outside.recommendations} == {"guarded", "reference"}
    assert all(any("zero-shot" in w for w in r.warnings) for r in outside.recommendations)
    zero_shot = small_advisor.facts["zero_shot"]["lm-generate"]
    for r in outside.recommendations:
        if r.basis == "guarded":
            assert r.speedup == pytest.approx(math.exp(zero_shot[r.method_id]["log_speedup"]))


def test_a_floor_of_minus_one_keeps_a_measured_loss_beyond_minus_one(small_advisor, small_records):
    import dataclasses

    record = _task(small_records, "cpu-8c-avx2", lambda r: r["status"] == "ok" and r["method_id"] != "baseline")
    task = "|".join((record["model_id"], record["workload_id"], record["hardware_class"]))
    measured = {k: dict(v) for k, v in small_advisor.facts["measured"][task].items()}
    measured[record["method_id"]]["quality_delta"] = -2.5  # perplexity ×3.5: a relative change below -1
    advisor = dataclasses.replace(
        small_advisor,
        facts={**small_advisor.facts, "measured": {task: measured}},
        params={**small_advisor.params, "data_hash": "x"},
    )
    args = (advisor, record["model"], record["workload"], [record["node"]])
    assert record["method_id"] in {r.method_id for r in recommend(*args, quality_floor=-1).recommendations}
    assert record["method_id"] in {e.method_id for e in recommend(*args, quality_floor=-0.5).excluded}


def test_a_retrain_on_records_measured_again_under_their_run_ids_is_not_answered_from_memory(small_records):
    """Predictions are kept in memory per training snapshot. Re-measured records keep their run ids,
    so a snapshot is more than its run ids: the retrained advisor must predict the new figures."""
    lossy = "prune.struct.adapt_pruner"
    remeasured = [
        {**r, "quality_delta": -0.3} if r["method_id"] == lossy and r["status"] == "ok" else r for r in small_records
    ]
    record = _task(small_records, "cpu-8c-avx2")
    workload = _unprofiled(record)

    def predicted_quality(records) -> float:
        advisor, _table = fit_advisor(records, size="small")
        result = recommend(advisor, record["model"], workload, [record["node"]], quality_floor=-1)
        return next(r.quality_delta for r in result.recommendations if r.method_id == lossy)

    assert predicted_quality(small_records) > -0.1
    assert predicted_quality(remeasured) < -0.2
