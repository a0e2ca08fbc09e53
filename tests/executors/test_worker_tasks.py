"""The worker measures a claimed item of any workload kind with that kind's reference and harness."""

from __future__ import annotations

import subprocess
import sys

import pytest

from executors.families import reference_of, workload_from_json
from executors.families.stream.workload import STATIC_ID
from executors.registry import config_to_json, default_config
from executors.worker import WorkerContext, profile_item

NODE = {"id": "test-node", "hardware_class": "test-cpu-1t"}


def _item(workload: dict, *method_ids: str) -> dict:
    return {
        "model": "zoo:lm-tiny",
        "workload": workload,
        "reps": 5,
        "methods": [config_to_json(default_config(m)) for m in method_ids],
    }


@pytest.fixture
def context(tiny):
    return WorkerContext(server="http://unused", key="unused", node=NODE, bundles={"zoo:lm-tiny": tiny})


def test_a_stream_item_is_measured_against_static_batching(context):
    stream = {
        "kind": "lm-stream",
        "requests": 3,
        "load": 2.0,
        "max_batch": 2,
        "prompt_lens": [8, 12],
        "prefix_len": 8,
        "gen_lens": [3],
    }
    records = profile_item(context, _item(stream, STATIC_ID, "serve.continuous_batching"))["records"]
    by_method = {r["method_id"]: r for r in records}
    assert set(by_method) == {STATIC_ID, "serve.continuous_batching"}  # the reference is measured once
    assert by_method[STATIC_ID]["speedup"] == 1.0
    assert by_method["serve.continuous_batching"]["status"] == "ok"
    assert by_method["serve.continuous_batching"]["workload"]["kind"] == "lm-stream"


def test_a_generation_item_keeps_the_plain_baseline(context):
    records = profile_item(
        context, _item({"batch_size": 1, "prompt_len": 8, "gen_len": 4}, "baseline", "quant.int8_dynamic")
    )["records"]
    assert {r["method_id"] for r in records} == {"baseline", "quant.int8_dynamic"}
    assert all(r["workload"]["kind"] == "lm-generate" and r["status"] == "ok" for r in records)


def test_an_embed_item_on_a_decoder_is_recorded_not_applicable(context):
    records = profile_item(
        context, _item({"kind": "encoder-embed", "batch_size": 1, "seq_len": 16}, "quant.int8_dynamic")
    )["records"]
    assert records and {r["status"] for r in records} == {"not-applicable"}
    assert "encoder" in records[0]["reason"]


def test_workload_kinds_round_trip_and_unknown_kinds_are_refused():
    for shape in (
        {"batch_size": 2, "prompt_len": 16, "gen_len": 8},
        {"kind": "lm-longctx", "prompt_len": 1024},
        {"kind": "encoder-embed", "batch_size": 4, "seq_len": 64},
        {"kind": "lm-stream", "requests": 4, "max_batch": 2, "prompt_lens": [8, 16]},
    ):
        workload = workload_from_json(shape)
        assert workload_from_json(workload.shape()) == workload
    assert reference_of(workload) == STATIC_ID
    with pytest.raises(ValueError, match="unknown workload kind 'lm-video'"):
        workload_from_json({"kind": "lm-video"})
    with pytest.raises(ValueError, match="unknown fields prompt_len"):
        workload_from_json({"kind": "encoder-embed", "prompt_len": 3})


def test_a_fresh_worker_process_registers_the_references_itself(zoo_root):
    # A worker process imports nothing but its own module before the first claim arrives.
    script = f"""
from executors.registry import method_ids
from executors.worker import WorkerContext, profile_item
from executors.zoo import load_bundle
assert not method_ids()
bundle = load_bundle("zoo:lm-tiny", {str(zoo_root)!r}, build_missing=False)
ctx = WorkerContext(server="http://unused", key="unused", node={NODE!r}, bundles={{"zoo:lm-tiny": bundle}})
item = {{"model": "zoo:lm-tiny", "workload": {{"batch_size": 1, "prompt_len": 8, "gen_len": 2}}, "reps": 5,
        "methods": [{{"method": "baseline", "version": 1, "params": {{}}}}]}}
print(sorted(r["method_id"] for r in profile_item(ctx, item)["records"]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['baseline']"
