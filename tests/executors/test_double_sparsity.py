"""attn.double_sparsity: calibration, label cache, decode vs offline simulation, dense limits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from executors.families import measure
from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.workloads import heldout_prompts, heldout_windows, perplexity
from executors.families.longctx.workload import LongContextWorkload
from executors.methods.attn.double_sparsity import (
    DoubleSparseLM,
    DoubleSparsityConfig,
    calibrate,
    calibration_windows,
    channel_importance,
    token_budget,
)
from executors.protocol import prepare
from executors.registry import apply_composite, default_config, get_method

SPARSE = DoubleSparsityConfig(
    min_tokens=8, token_ratio=0.05, channel_ratio=0.25, calibration_windows=4, calibration_len=128
)


@pytest.fixture(scope="module")
def sparse_runner(tiny):
    return get_method("attn.double_sparsity").apply(tiny, SPARSE)


def test_channel_criteria_follow_the_paper_definitions():
    """q outliers in channel 1, k outliers in channel 2, both large in channel 5: 'qk' scores
    |q_c·k_c| of a token with its own key, so only channel 5 wins it; 'q' and 'k' see their own."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 50, 8, generator=generator)  # 4 query heads over 2 KV heads
    k = torch.randn(1, 2, 50, 8, generator=generator)
    q[..., 1] *= 30
    k[..., 2] *= 30
    q[..., 5] *= 8
    k[..., 5] *= 8
    assert channel_importance(q, k, "qk").argmax(-1).tolist() == [5, 5]
    assert channel_importance(q, k, "q").argmax(-1).tolist() == [1, 1]
    assert channel_importance(q, k, "k").argmax(-1).tolist() == [2, 2]
    with pytest.raises(ValueError, match="criterion"):
        channel_importance(q, k, "v")


def test_calibration_gives_r_sorted_channels_per_kv_head_and_keeps_dense_layers(tiny):
    config = dataclasses.replace(SPARSE, dense_layers=1)
    channels = calibrate(tiny.model, calibration_windows(tiny, config), config)
    c = tiny.model.config
    assert channels[0] is None and len(channels) == c.n_layers
    for layer in channels[1:]:
        assert layer is not None and layer.shape == (c.n_kv_heads, c.head_dim // 4)
        assert torch.equal(layer, layer.sort(dim=-1).values) and len(set(layer[0].tolist())) == layer.shape[1]


def test_token_budget():
    assert token_budget(SPARSE, 1000) == 50 and token_budget(SPARSE, 100) == 8 and token_budget(SPARSE, 5) == 5


def test_a_budget_covering_the_context_is_exactly_dense(tiny):
    channels = calibrate(tiny.model, calibration_windows(tiny, SPARSE), SPARSE)
    dense = DoubleSparseLM(tiny.model, channels, dataclasses.replace(SPARSE, min_tokens=10_000))
    prompts = heldout_prompts(tiny, 3, 60)
    assert torch.equal(
        PlainDecoder(dense).generate(prompts, 10).tokens, PlainDecoder(tiny.model).generate(prompts, 10).tokens
    )
    windows = heldout_windows(tiny, 2, 100)
    assert torch.allclose(dense(windows), tiny.model(windows), atol=1e-4)


def test_decode_step_matches_the_offline_simulation(tiny):
    """With only the last layer sparse, every layer's keys are the same whether the prompt went
    through a dense prefill or not, so the label-cache decode step and the all-positions
    simulation must give the same last-position logits."""
    last_only = dataclasses.replace(SPARSE, dense_layers=tiny.model.config.n_layers - 1)
    channels = calibrate(tiny.model, calibration_windows(tiny, last_only), last_only)
    model = DoubleSparseLM(tiny.model, channels, last_only)
    tokens = heldout_prompts(tiny, 2, 180)
    with torch.inference_mode():
        cache = model.new_cache(2, 180)
        model(tokens[:, :-1], cache)
        stepped = model(tokens[:, -1:], cache)[:, -1]
        simulated = model(tokens)[:, -1]
        dense = tiny.model(tokens)[:, -1]
    assert torch.allclose(stepped, simulated, atol=1e-4)
    assert not torch.allclose(stepped, dense, atol=1e-3), "9 of 180 tokens should not reproduce dense attention"
    layer = len(channels) - 1
    expected = torch.gather(cache.keys[layer][:, :, :180], 3, channels[layer][None, :, None, :].expand(2, -1, 180, -1))
    assert torch.equal(cache.labels[layer][:, :, :180], expected)  # the label cache is the keys' chosen channels


def test_the_error_against_dense_attention_shrinks_as_the_budget_grows(tiny, sparse_runner):
    windows = heldout_windows(tiny, 2, 200)
    with torch.inference_mode():
        dense = tiny.model(windows)
        errors = [
            (
                DoubleSparseLM(
                    tiny.model, sparse_runner.model.channels, dataclasses.replace(SPARSE, min_tokens=budget)
                )(windows)
                - dense
            )
            .abs()
            .mean()
            .item()
            for budget in (8, 48, 200)
        ]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5
    assert perplexity(sparse_runner.model, windows) != perplexity(tiny.model, windows)
    assert sparse_runner.stats["kernel_backend"] == "torch-reference" and sparse_runner.stats["label_channels"] == 4


def test_supports_gives_reasons(tiny):
    method = get_method("attn.double_sparsity")
    short = dataclasses.replace(tiny, model=type(tiny.model)(dataclasses.replace(tiny.model.config, max_seq_len=32)))
    assert "budget" in method.supports(short, torch.device("cpu"))
    not_a_decoder = dataclasses.replace(tiny, model=torch.nn.Linear(2, 2), capabilities=frozenset())
    assert "decoder LM" in method.supports(not_a_decoder, torch.device("cpu"))


def test_composes_under_int8_and_profiles_a_long_context_task(tiny):
    int8 = default_config("quant.int8_dynamic")
    runner = apply_composite(tiny, (int8, SPARSE))
    assert isinstance(runner, PlainDecoder), "the sparse model decodes on the family's plain decoder"
    assert runner.generate(heldout_prompts(tiny, 2, 100), 5).tokens.shape == (2, 5)
    workload = LongContextWorkload(prompt_len=200, gen_len=4, probes=2, ppl_windows=1)
    methods = [prepare(tiny, (SPARSE,), torch.device("cpu"))]
    node = {"id": "test-node", "hardware_class": "test"}
    records = {r["method_id"]: r for r in measure(tiny, workload, methods, node, device=torch.device("cpu"))}
    sparse = records["attn.double_sparsity"]
    assert sparse["status"] == "ok" and sparse["quality_metric"] == "retrieval_accuracy"
    assert sparse["quality_baseline"] == records["baseline"]["quality_value"]
    assert sparse["metrics"]["longctx_perplexity"] != sparse["metrics"]["baseline_longctx_perplexity"]
    assert sparse["metrics"]["retrieval_probes"] == 2 and sparse["workload"]["kind"] == "lm-longctx"
