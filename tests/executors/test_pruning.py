"""Pruning: structured slicing is exact, Adapt-Pruner's schedule and result, PERP's masks and retraining."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.model import DecoderLM, LMConfig, count_parameters
from executors.families.lm.workloads import heldout_prompts, heldout_windows, perplexity
from executors.methods.prune.adapt_pruner import (
    AdaptPruner,
    AdaptPrunerConfig,
    layer_importance,
    next_sparsity,
)
from executors.methods.prune.perp import Perp, PerpConfig, PerpLinear, magnitude_mask
from executors.methods.prune.surgery import (
    as_pruned,
    attention_units,
    keep_attention_units,
    keep_ffn_channels,
)
from executors.protocol import model_bytes


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mha_model() -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(
        LMConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=48, max_seq_len=64)
    ).eval()


def zeroed_copy(model: DecoderLM, layer: int, q_heads: list[int], channels: list[int]) -> DecoderLM:
    """The same model with those heads' output columns and FFN channels zeroed: what slicing must equal."""
    reference = copy.deepcopy(model)
    head_dim = model.config.head_dim
    with torch.no_grad():
        block = reference.layers[layer]
        for head in q_heads:
            block.attention.wo.weight[:, head * head_dim : (head + 1) * head_dim] = 0
        block.feed_forward.w2.weight[:, channels] = 0
    return reference


@pytest.mark.parametrize("which", ["gqa", "mha"])
def test_slicing_units_out_equals_zeroing_them(which, tiny):
    model = tiny.model if which == "gqa" else mha_model()
    pruned = as_pruned(model)
    attention = pruned.layers[1].attention
    units = attention_units(attention)
    if which == "gqa":  # lm-tiny: 4 query heads in 2 groups, so a unit is one query head of each group
        assert units == [([0, 2], []), ([1, 3], [])]
    else:
        assert units == [([h], [h]) for h in range(4)]
    keep_attention_units(attention, model.config.head_dim, [0])
    dropped = [h for unit in units[1:] for h in unit[0]]
    keep_ffn_channels(pruned.layers[1].feed_forward, list(range(0, model.config.ffn_dim, 2)))
    reference = zeroed_copy(model, 1, dropped, list(range(1, model.config.ffn_dim, 2)))

    assert count_parameters(pruned) < count_parameters(model)
    assert pruned.layers[1].feed_forward.w2.in_features == model.config.ffn_dim // 2
    tokens = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(pruned(tokens), reference(tokens), atol=1e-5, rtol=1e-4)
    # Decoding goes through the per-layer KV cache: the sliced layer's cache has its own head count.
    cache = pruned.new_cache(2, 24)
    assert cache.keys[1].shape[1] == attention.n_kv_heads and cache.keys[0].shape[1] == model.config.n_kv_heads
    assert torch.equal(
        PlainDecoder(pruned).generate(tokens, 8).tokens, PlainDecoder(reference).generate(tokens, 8).tokens
    )


def test_a_layer_that_passes_its_input_through_is_least_important_and_pruned_most(tiny):
    model = copy.deepcopy(tiny.model)
    with torch.no_grad():  # block 2 adds nothing to the residual stream: output = input
        model.layers[2].attention.wo.weight.zero_()
        model.layers[2].feed_forward.w2.weight.zero_()
    windows = heldout_windows(tiny, 2, 33)
    importance = layer_importance(model, windows)
    assert min(importance) == importance[2] < 0  # cos(input, output) = 1: the lowest possible raw score
    assert sum(importance) == pytest.approx(0.0, abs=1e-6) and max(map(abs, importance)) == pytest.approx(1.0)
    sparsity = next_sparsity([0.1] * 4, importance, 0.05, 0.03)
    assert max(sparsity) == sparsity[2] == pytest.approx(0.15 - 0.03 * importance[2])
    assert sum(sparsity) / 4 == pytest.approx(0.15)


def test_adapt_pruner_returns_a_smaller_dense_model_and_caches_it(tiny):
    config = AdaptPrunerConfig(
        target_sparsity=0.5, increments=2, recovery_steps=2, importance_windows=2, batch=2, seq_len=32
    )
    runner = AdaptPruner().apply(tiny, config)
    model, stats = runner.model, runner.stats
    assert stats["params_after"] == count_parameters(model) < stats["params_before"] == count_parameters(tiny.model)
    assert model_bytes(model) < model_bytes(tiny.model)
    widths = [layer.feed_forward.w1.out_features for layer in model.layers]
    assert max(widths) < tiny.model.config.ffn_dim and [s["ffn"] for s in stats["layer_shapes"]] == widths
    for layer in model.layers:
        assert layer.attention.n_heads % layer.attention.n_kv_heads == 0  # query groups stay equal
        assert layer.attention.wq.out_features == layer.attention.n_heads * model.config.head_dim
    prompts = heldout_prompts(tiny, 3, 16)
    generated = runner.generate(prompts, 6).tokens
    assert generated.shape == (3, 6) and not stats["pruned_cached"]

    again = AdaptPruner().apply(tiny, config)
    assert again.stats["pruned_cached"] and again.stats["setup_training_s"] == stats["setup_training_s"]
    assert torch.equal(again.generate(prompts, 6).tokens, generated)
    other = AdaptPruner().apply(tiny, dataclasses.replace(config, target_sparsity=0.25))
    assert not other.stats["pruned_cached"] and other.stats["params_after"] > stats["params_after"]


def test_magnitude_masks_keep_the_largest_weights():
    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    mask = magnitude_mask(weight, 0.75, "unstructured")
    assert int(mask.sum()) == 32
    assert weight[mask].abs().min() > weight[~mask].abs().max()
    semi = magnitude_mask(weight, 0.0, "2:4")  # N:M ignores `sparsity`
    groups, magnitudes = semi.view(-1, 4), weight.abs().view(-1, 4)
    assert (groups.sum(1) == 2).all()
    assert (
        magnitudes.masked_fill(~groups, float("inf")).min(1).values >= magnitudes.masked_fill(groups, -1).max(1).values
    ).all()
    with pytest.raises(ValueError, match="N:M"):
        magnitude_mask(weight, 0.5, "4:2")


def test_perp_adapters_merge_into_the_same_function_without_reviving_zeros():
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8, bias=False)
    keep = magnitude_mask(linear.weight, 0.5, "unstructured")
    layer = PerpLinear(linear, keep, frozenset({"biases", "masklora", "scalelora"}), rank=2)
    with torch.no_grad():
        for param in layer.parameters():
            param.add_(torch.randn_like(param) * 0.1)  # as if trained
    merged = layer.merged()
    x = torch.randn(3, 16)
    torch.testing.assert_close(merged(x), layer(x), atol=1e-5, rtol=1e-5)
    assert (merged.weight[~keep] == 0).all() and (merged.weight[keep] != linear.weight[keep]).any()


def test_perp_retrains_only_the_subset_and_recovers_quality(tiny):
    pruned_only = Perp().apply(tiny, PerpConfig(sparsity=0.9, retrain="", steps=0))
    retrained = Perp().apply(tiny, PerpConfig(sparsity=0.9, retrain="biases,norms", steps=30))
    assert retrained.stats["sparsity"] == pruned_only.stats["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert 0 < retrained.stats["retrained_fraction"] < 0.05
    base, model = tiny.model, retrained.model
    assert torch.equal(model.tok_embeddings.weight, base.tok_embeddings.weight)  # outside the subset: frozen
    for (name, linear), (_, original) in zip(model.layers.named_modules(), base.layers.named_modules(), strict=False):
        if isinstance(linear, torch.nn.Linear):
            survivors = linear.weight != 0
            assert torch.equal(linear.weight[survivors], original.weight[survivors]), name
            assert linear.bias is not None and linear.bias.abs().sum() > 0, name
    windows = heldout_windows(tiny, 8, 129)
    assert perplexity(model, windows) < perplexity(pruned_only.model, windows)


def test_pruning_methods_name_a_reason_for_models_they_cannot_retrain(tiny):
    encoder = dataclasses.replace(tiny, capabilities=tiny.capabilities - {"kv_cache", "next_token_loss"})
    assert "decoder" in AdaptPruner().supports(encoder, torch.device("cpu"))  # slicing is DecoderLM-specific
    no_text = dataclasses.replace(tiny, calibration_texts=())
    for method in (AdaptPruner(), Perp()):
        assert "calibration" in method.supports(no_text, torch.device("cpu"))


def test_a_pruned_model_composes_with_int8_and_with_lossless_speculative_decoding(tiny):
    from executors.methods.spec.swift import SwiftRunner
    from executors.registry import apply_composite, composite_from_json

    pruning = {
        "method": "prune.struct.adapt_pruner",
        "params": {
            "target_sparsity": 0.5,
            "increments": 1,
            "recovery_steps": 1,
            "importance_windows": 2,
            "batch": 2,
            "seq_len": 32,
        },
    }
    pruned = apply_composite(tiny, composite_from_json(pruning)).model
    prompts = heldout_prompts(tiny, 4, 16)
    expected = PlainDecoder(pruned).generate(prompts, 10).tokens
    swift = apply_composite(tiny, composite_from_json([pruning, {"method": "lm.spec.swift"}]))
    assert isinstance(swift, SwiftRunner)
    assert torch.equal(swift.generate(prompts, 10).tokens, expected)  # per-layer caches survive rollback
    int8 = apply_composite(tiny, composite_from_json([pruning, {"method": "quant.int8_dynamic"}]))
    assert isinstance(int8, PlainDecoder)
    assert (int8.generate(prompts, 10).tokens == expected).float().mean() > 0.5
    with pytest.raises(ValueError, match="before"):
        composite_from_json([{"method": "quant.int8_dynamic"}, pruning])
