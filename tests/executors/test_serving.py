"""The serving engine, its methods and the request-stream profiler, on the tiny zoo LM."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from test_spec_engine import one_thread  # noqa: F401  (autouse: every test here runs one thread)

from executors.families import measure
from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.workloads import heldout_prompts
from executors.families.stream.workload import STATIC_ID, StreamWorkload, build_requests, parse_grid
from executors.methods.serve.engine import BlockPool, EngineOptions, Request, RequestState, packed_forward, serve
from executors.protocol import prepare
from executors.registry import apply_composite, default_config
from profiles.db import make_engine, session_scope
from profiles.migrate import upgrade
from profiles.transfer import add_records

CPU = torch.device("cpu")
SMALL = StreamWorkload(
    requests=8, max_batch=3, prompt_lens=(8, 40), prefix_len=32, prefixes=2, shared=0.75, gen_lens=(3, 9)
)
COMPOSITES = [
    ("serve.continuous_batching",),
    ("serve.prefix_caching",),
    ("serve.chunked_prefill",),
    ("serve.prefix_caching", "serve.chunked_prefill"),
    ("serve.continuous_batching", "serve.prefix_caching", "serve.chunked_prefill"),
]


def runner_for(bundle, ids, **params):
    configs = [
        type(default_config(i))(**{k: v for k, v in params.items() if hasattr(default_config(i), k)}) for i in ids
    ]
    return apply_composite(bundle, configs)


def outputs(result):
    return [state.output for state in result.requests]


@pytest.fixture(scope="module")
def stream(tiny):
    return build_requests(tiny, SMALL, rate=400.0)  # arrivals spread over tens of ms: joins mid-flight


@pytest.fixture(scope="module")
def static_outputs(tiny, stream):
    return outputs(runner_for(tiny, [STATIC_ID]).serve(stream, SMALL.max_batch))


def test_static_batching_reproduces_plain_greedy_decoding_per_request(tiny, stream, static_outputs):
    for request, produced in zip(stream, static_outputs, strict=False):
        alone = PlainDecoder(tiny.model).generate(torch.tensor([request.prompt]), request.max_new_tokens)
        assert produced == alone.tokens[0].tolist()


@pytest.mark.parametrize("ids", COMPOSITES, ids="+".join)
def test_every_serving_method_is_lossless_against_static_batching(tiny, stream, static_outputs, ids):
    result = runner_for(tiny, ids, chunk_size=16).serve(stream, SMALL.max_batch)
    assert outputs(result) == static_outputs
    assert [len(s.token_times) for s in result.requests] == [r.max_new_tokens for r in stream]


def test_packed_rows_do_not_depend_on_their_batch_companions(tiny):
    """Batch invariance: the reason scheduling cannot change a request's greedy tokens."""
    prompts = heldout_prompts(tiny, 3, 24).tolist()

    def last_logits(prompt_groups):
        lm = tiny.model
        pool = BlockPool(lm, 16, 8, prefix_caching=False)
        states = [RequestState(i, Request(tuple(p), 1)) for i, p in enumerate(prompt_groups)]
        for state in states:
            state.blocks = [pool.allocate() for _ in range(math.ceil(len(state.request.prompt) / 8))]
        return packed_forward(lm, pool, [(s, list(s.request.prompt)) for s in states])

    alone = last_logits([prompts[0][:5]])
    with_others = last_logits([prompts[0][:5], prompts[1], prompts[2][:11]])
    assert torch.equal(alone[0], with_others[0])


def test_prefix_caching_really_skips_the_shared_prefill(tiny):
    shared = StreamWorkload(
        requests=5, max_batch=1, prompt_lens=(8, 20), prefix_len=32, prefixes=1, shared=1.0, gen_lens=(2,)
    )
    requests = build_requests(tiny, shared, math.inf)
    plain = runner_for(tiny, [STATIC_ID]).serve(requests, 1)
    cached = runner_for(tiny, ["serve.prefix_caching"]).serve(requests, 1)
    prompt_tokens = sum(len(r.prompt) for r in requests)
    assert plain.prefill_tokens_computed == prompt_tokens
    # One request at a time: the first computes the 32-token prefix (2 blocks of 16), the others reuse it.
    assert [s.cached_tokens for s in cached.requests] == [0, 32, 32, 32, 32]
    assert cached.prefill_tokens_computed == prompt_tokens - 4 * 32
    assert outputs(cached) == outputs(plain)


def test_prefix_cache_evicts_least_recently_released_blocks(tiny):
    pool = BlockPool(tiny.model, 3, 4, prefix_caching=True)
    first = RequestState(0, Request(tuple(range(1, 10)), 1))
    allocated = [pool.allocate() for _ in range(3)]
    first.blocks, first.kv_len = list(allocated), 9
    pool.register_full_blocks(first)  # two full blocks of 4 become reusable; the partial third does not
    pool.release(first)
    again = RequestState(1, Request(tuple(range(1, 10)), 1))
    pool.match_prefix(again)
    assert again.blocks == allocated[:2] and again.kv_len == again.cached_tokens == 8
    assert again.block_hashes == first.block_hashes[:2]
    pool.release(again)
    other = [pool.allocate() for _ in range(3)]  # needs every block: the cached ones are evicted
    assert sorted(other) == sorted(allocated) and not pool.by_hash and not pool.hash_of


def test_chunked_prefill_splits_prompts_and_piggybacks_decodes(tiny):
    prompts = heldout_prompts(tiny, 2, 40).tolist()
    requests = [Request(tuple(p), 6) for p in prompts]
    result = serve(tiny.model, EngineOptions(chunk_size=16), requests, 2)
    pieces = [n for step in result.schedule for _, n in step["prefill"]]
    assert max(pieces) <= 16 and sum(pieces) == 80
    assert [s.chunks for s in result.requests] == [3, 4]  # 16+16+8, then 8+15+15+2 beside decodes
    assert any(step["decode"] and step["prefill"] for step in result.schedule), "decodes ride with chunks"
    whole = serve(tiny.model, EngineOptions(), requests, 2)
    assert [s.chunks for s in whole.requests] == [1, 1] and outputs(whole) == outputs(result)


def test_continuous_batching_admits_requests_mid_flight_and_static_does_not(tiny):
    prompt = tuple(heldout_prompts(tiny, 1, 8)[0].tolist())
    requests = [Request(prompt, 120, 0.0), Request(prompt[:6], 3, 0.02)]  # the second arrives mid-generation
    static = serve(tiny.model, EngineOptions(), requests, 2)
    continuous = serve(tiny.model, EngineOptions(continuous=True), requests, 2)
    assert not any(s.admitted_while_running for s in static.requests)
    assert static.requests[1].token_times[0] > static.requests[0].token_times[-1], "static waits for the batch"
    late = continuous.requests[1]
    assert late.admitted_while_running and late.token_times[-1] < continuous.requests[0].token_times[-1]
    joined = next(step for step in continuous.schedule if (1, len(requests[1].prompt)) in step["prefill"])
    assert joined["decode"] == [0]  # its prefill shared an iteration with the running request's decode
    assert outputs(static) == outputs(continuous)


def test_stream_workloads_parse_into_a_grid_with_stable_rows(tiny):
    workloads = parse_grid(" requests=4 load=0.5,4 batch=2,4 prompt=8+24 gen=4")
    assert len(workloads) == 4 and {w.max_batch for w in workloads} == {2, 4}
    assert workloads[0].prompt_lens == (8, 24) and len({w.id for w in workloads}) == 4
    row = workloads[0].row()
    assert row["kind"] == "lm-stream" and row["batch_size"] == 2 and row["params"]["load"] == 0.5
    with pytest.raises(ValueError, match="unknown stream axis"):
        parse_grid("speed=3")
    slow, fast = build_requests(tiny, SMALL, 10.0), build_requests(tiny, SMALL, 40.0)
    assert [r.prompt for r in slow] == [r.prompt for r in fast]
    assert [r.arrival_s for r in slow] == pytest.approx([4 * r.arrival_s for r in fast])
    assert sum(len(r.prompt) > 40 for r in slow) >= 1, "some requests sit behind a shared system prompt"


@pytest.fixture(scope="module")
def records(tiny):
    node = {"id": "test-node", "hardware_class": "test-class"}
    methods = [
        prepare(tiny, [default_config(i) for i in ids], CPU)
        for ids in (
            ("serve.continuous_batching",),
            ("serve.prefix_caching", "serve.chunked_prefill"),
            ("quant.int8_dynamic",),
        )
    ]
    # One shared system prompt and more requests than slots: later batches must hit the prefix cache.
    workload = StreamWorkload(
        requests=5, load=2.0, max_batch=2, prompt_lens=(8, 24), prefix_len=16, prefixes=1, shared=1.0, gen_lens=(3, 6)
    )
    return measure(tiny, workload, methods, node, device=CPU, reps=5)


def test_stream_records_compare_every_method_with_static_batching(records):
    by_method = {r["method_id"]: r for r in records}
    assert set(by_method) == {
        STATIC_ID,
        "serve.continuous_batching",
        "serve.prefix_caching+serve.chunked_prefill",
        "quant.int8_dynamic",
    }
    assert by_method["quant.int8_dynamic"]["status"] == "not-applicable"
    base = by_method[STATIC_ID]
    assert base["speedup"] == 1.0 and base["metrics"]["arrival_rate_rps"] == pytest.approx(
        2.0 * base["metrics"]["static_capacity_rps"]
    )
    for record in (r for r in records if r["status"] == "ok"):
        metrics = record["metrics"]
        assert record["workload"]["kind"] == "lm-stream" and record["repeats"] == 5 * (1 + metrics["remeasured"])
        assert record["quality_metric"] == "greedy_token_match" and record["quality_value"] == 1.0
        assert record["speedup"] == pytest.approx(statistics.median(metrics["pairwise_speedups"]), rel=1e-3)
        assert metrics["baseline_latencies_s"] == base["metrics"]["latencies_s"][: record["repeats"]]  # makespans
        assert 0 < metrics["ttft_p50_s"] <= metrics["ttft_p99_s"] and 0 < metrics["itl_p50_s"] <= metrics["itl_p99_s"]
    combo = by_method["serve.prefix_caching+serve.chunked_prefill"]["metrics"]
    assert combo["prefix_hit_tokens"] > 0
    assert combo["prefill_tokens_computed"] == combo["prompt_tokens"] - combo["prefix_hit_tokens"]


def test_stream_records_store(records, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    with session_scope(engine) as session:
        assert add_records(session, enumerate(records, start=1)).added == len(records)
