"""The profiler harness: interleaved rounds, ratios, quality, not-applicable records, storage."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
import torch

from executors.families import measure
from executors.families.lm.workloads import LMWorkload
from executors.hardware import fingerprint, node_row
from executors.protocol import model_bytes, prepare
from executors.registry import default_config
from profiles.db import make_engine, session_scope
from profiles.migrate import upgrade
from profiles.models import ProfileRun
from profiles.transfer import add_records

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    return node_row(fingerprint("cpu", tmp_path_factory.mktemp("hw")))


@pytest.fixture(scope="module")
def records(tiny, node):
    methods = [prepare(tiny, [default_config(m)], CPU) for m in ("quant.int8_dynamic", "lm.spec.swift")]
    return measure(tiny, LMWorkload(batch_size=2, prompt_len=16, gen_len=6), methods, node, device=CPU, reps=5)


def test_one_baseline_serves_every_method_and_speedup_is_the_median_ratio(records):
    by_method = {r["method_id"]: r for r in records}
    assert set(by_method) == {"baseline", "quant.int8_dynamic", "lm.spec.swift"}
    base = by_method["baseline"]
    assert base["speedup"] == 1.0 and base["repeats"] in (5, 10)  # 10 where a method was re-measured
    for record in records:
        metrics = record["metrics"]
        paired = base["metrics"]["latencies_s"][: len(metrics["latencies_s"])]  # the rounds both ran in
        assert metrics["baseline_latencies_s"] == paired
        ratios = [b / m for b, m in zip(metrics["baseline_latencies_s"], metrics["latencies_s"], strict=False)]
        assert record["speedup"] == pytest.approx(statistics.median(ratios), rel=1e-3)
        assert record["latency_p10_s"] <= record["latency_p50_s"] <= record["latency_p90_s"]
        assert record["throughput"] == pytest.approx(2 * 6 / record["latency_p50_s"])


def test_quality_is_measured_on_the_same_inputs(records):
    by_method = {r["method_id"]: r for r in records}
    swift = by_method["lm.spec.swift"]
    assert swift["quality_metric"] == "greedy_token_match" and swift["quality_value"] == 1.0
    int8 = by_method["quant.int8_dynamic"]
    assert int8["quality_metric"] == "heldout_perplexity"
    assert int8["quality_baseline"] == by_method["baseline"]["metrics"]["heldout_perplexity"]
    assert int8["peak_mem_mb"] < int8["baseline_peak_mem_mb"], "int8 weights take less memory"


def test_records_store_idempotently_with_deterministic_ids(records, tiny, node, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    with session_scope(engine) as session:
        assert add_records(session, enumerate(records, 1)).added == 3
    again = measure(
        tiny,
        LMWorkload(batch_size=2, prompt_len=16, gen_len=6),
        [prepare(tiny, [default_config("quant.int8_dynamic")], CPU)],
        node,
        device=CPU,
    )
    assert {r["run_id"] for r in again} <= {r["run_id"] for r in records}
    with session_scope(engine) as session:
        result = add_records(session, enumerate(again, 1))
        assert (result.added, result.skipped) == (0, 2)
        assert session.get(ProfileRun, records[0]["run_id"]).environment["threads"] == torch.get_num_threads()


def test_a_workload_beyond_the_context_is_not_applicable(tiny, node):
    too_long = LMWorkload(batch_size=1, prompt_len=250, gen_len=32)
    result = measure(tiny, too_long, [], node, device=CPU)
    assert result[0]["status"] == "not-applicable" and "context" in result[0]["reason"]


def test_fewer_than_five_repetitions_are_refused(tiny, node):
    with pytest.raises(ValueError, match="at least 5"):
        measure(tiny, LMWorkload(), [], node, device=CPU, reps=3)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # eager-mode quantization still works in 2.13
def test_int8_weights_are_counted_as_stored():
    linear = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False))
    quantized = torch.ao.quantization.quantize_dynamic(linear, {torch.nn.Linear}, dtype=torch.qint8)
    assert model_bytes(linear) == 64 * 64 * 4
    assert 64 * 64 <= model_bytes(quantized) < 64 * 64 * 2


def test_a_method_whose_quality_cannot_be_measured_is_a_failed_record_and_the_task_goes_on(tiny, node, monkeypatch):
    from executors.families import kind_of

    workload = LMWorkload(batch_size=1, prompt_len=16, gen_len=4)
    harness = type(kind_of(workload).harness)
    measured = harness.quality

    def quality(self, prepared, *args):
        if prepared.method_id == "lm.spec.swift":
            raise RuntimeError("Expected all tensors to be on the same device")
        return measured(self, prepared, *args)

    monkeypatch.setattr(harness, "quality", quality)
    methods = [prepare(tiny, [default_config(m)], CPU) for m in ("quant.int8_dynamic", "lm.spec.swift")]
    records = {r["method_id"]: r for r in measure(tiny, workload, methods, node, device=CPU, reps=5)}
    assert records["lm.spec.swift"]["status"] == "failed"
    assert records["lm.spec.swift"]["reason"].startswith("quality: RuntimeError: Expected all tensors")
    assert records["quant.int8_dynamic"]["status"] == "ok" and records["quant.int8_dynamic"]["quality_value"] > 0
    assert records["baseline"]["status"] == "ok"


def test_off_the_cpu_a_method_is_built_on_a_cpu_copy_and_its_runner_moved_whole(tiny):
    from dataclasses import dataclass

    from executors.protocol import to_device

    meta = torch.device("meta")  # a device that is not the CPU, present on every machine
    prepared = prepare(tiny, [default_config("lm.spec.medusa")], meta)
    assert prepared.status == "ok", prepared.reason
    held = list(prepared.runner.model.parameters())
    held += [
        p for value in vars(prepared.runner).values() if isinstance(value, torch.nn.Module) for p in value.parameters()
    ]
    assert held and all(p.device.type == "meta" for p in held)
    assert all(p.device.type == "cpu" for p in tiny.model.parameters())  # the grid's own model is not touched

    @dataclass(frozen=True)
    class Plan:
        table: torch.Tensor

    class Holder:
        def __init__(self):
            self.model: torch.nn.Module = torch.nn.Linear(2, 2)
            self.heads = [torch.nn.Linear(2, 2)]
            self.plan, self.cache = Plan(torch.zeros(3)), {"mask": torch.ones(2)}
            self.bundle, self.stats = tiny, {"kernel_backend": "torch-reference"}

    runner: Any = to_device(Holder(), meta)
    assert runner.model.weight.is_meta and runner.heads[0].weight.is_meta
    assert runner.plan.table.is_meta and runner.cache["mask"].is_meta
    assert runner.bundle is tiny and all(not p.is_meta for p in tiny.model.parameters())
    assert runner.stats["kernel_backend_reason"].startswith("device is meta")
