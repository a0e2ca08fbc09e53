"""ABQ-LLM: exact fake quant = the kernels' packed format; bit balance; calibration corrects."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from accel_kernels.anybit_gemm import anybit_matmul_reference
from accel_kernels.dispatch import lowbit_linear
from accel_kernels.quant_pack import dequantize_weight, quantize_weight, to_layout
from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.workloads import heldout_windows, perplexity
from executors.methods.quant.abq_arbitrary_bit import (
    ABQConfig,
    CalibLinear,
    LowBitLinear,
    compensated,
    quantize_abq,
)
from executors.methods.quant.fakequant import fake_quant_weight, pack_grid, weight_grid
from executors.protocol import model_bytes
from executors.registry import get_method


@pytest.mark.parametrize(("bits", "group_size", "in_features"), [(2, 32, 64), (3, 32, 72), (5, 16, 48), (8, 64, 64)])
def test_fake_quant_is_exactly_what_the_kernels_dequantize(bits, group_size, in_features):
    torch.manual_seed(bits)
    weight = torch.randn(12, in_features)
    grid = weight_grid(weight, bits, group_size)
    packed = pack_grid(weight, grid, layout="planes")
    assert torch.equal(fake_quant_weight(weight, grid), dequantize_weight(packed))
    x = torch.randn(3, in_features)
    torch.testing.assert_close(
        anybit_matmul_reference(x, packed), x @ dequantize_weight(packed).T, atol=1e-4, rtol=1e-4
    )


def test_unclipped_grid_matches_the_kernels_own_quantizer():
    torch.manual_seed(0)
    weight = torch.randn(8, 64)
    ours = dequantize_weight(pack_grid(weight, weight_grid(weight, 4, 32)))
    assert torch.equal(ours, dequantize_weight(quantize_weight(weight, 4, 32)))


def test_bit_balance_gives_int2_five_levels_symmetric_about_zero():
    weight = torch.linspace(-1, 1, 64).repeat(4, 1)
    plain, balanced = weight_grid(weight, 2, 64), weight_grid(weight, 2, 64, bit_balance=True)
    assert (plain.qmax, plain.storage_bits) == (3, 2)
    assert (balanced.qmax, balanced.storage_bits) == (4, 3), "5 levels need 3 bits of storage"
    values = fake_quant_weight(weight, balanced)[0].unique()
    assert len(values) == 5 and torch.allclose(values, -values.flip(0), atol=1e-3)
    assert len(fake_quant_weight(weight, plain)[0].unique()) == 4
    err_plain = (fake_quant_weight(weight, plain) - weight).abs().mean()
    assert (fake_quant_weight(weight, balanced) - weight).abs().mean() < err_plain


def test_clipping_factors_receive_gradients_and_compensation_follows_the_papers_rule():
    layer = CalibLinear(torch.nn.Linear(64, 16), ABQConfig(w_bits=3, group_size=32), compensate=True)
    layer(torch.randn(5, 64)).pow(2).sum().backward()
    assert layer.upper.grad.abs().sum() > 0 and layer.lower.grad.abs().sum() > 0
    assert layer.left.grad.abs().sum() > 0
    assert [compensated(i, 32) for i in (0, 2, 3, 27, 28, 31)] == [True, True, False, False, True, True]


@pytest.mark.parametrize(
    ("bits", "layout", "in_features"),
    [(2, "stream", 72), (4, "stream", 64), (8, "stream", 40), (3, "planes", 72), (6, "planes", 64)],
)
def test_cpu_unpacking_equals_the_kernels_dequantize(bits, layout, in_features):
    weight = torch.randn(10, in_features)
    packed = pack_grid(weight, weight_grid(weight, bits, 32), layout)
    assert torch.equal(LowBitLinear(packed, None, 16).dequantized(), dequantize_weight(packed))


def test_low_bit_linear_stores_packed_codes_and_matches_dispatch():
    linear = torch.nn.Linear(64, 24)
    frozen = CalibLinear(linear, ABQConfig(w_bits=3, group_size=32, a_bits=16), compensate=False).freeze()
    assert isinstance(frozen, LowBitLinear) and frozen.layout == "planes" and frozen.bits == 3
    assert frozen.packed.dtype == torch.uint8 and frozen.packed.numel() == 24 * 64 * 3 // 8
    x = torch.randn(2, 5, 64)
    torch.testing.assert_close(frozen(x), lowbit_linear(x, to_layout(frozen.packed_weight(), "stream"), linear.bias))


def test_calibration_corrects_w2_and_shrinks_the_model(tiny):
    tokens = torch.stack([torch.tensor(tiny.tokenizer.encode(t)[:64]) for t in tiny.calibration_texts[:6]])
    windows = heldout_windows(tiny, 4, 65)
    rtn, _ = quantize_abq(tiny.model, tokens, ABQConfig(w_bits=2, group_size=32, epochs=0))
    calibrated, learned = quantize_abq(tiny.model, tokens, ABQConfig(w_bits=2, group_size=32, epochs=4))
    assert any(k.endswith("left") for k in learned) and any(k.endswith("upper") for k in learned)
    with torch.no_grad():  # what the correction optimises: closeness to the FP model on its inputs
        reference = tiny.model(tokens)
        assert (calibrated(tokens) - reference).pow(2).mean() < (rtn(tokens) - reference).pow(2).mean()
    assert perplexity(calibrated, windows) == pytest.approx(perplexity(tiny.model, windows), rel=0.1)
    assert model_bytes(calibrated) < model_bytes(tiny.model) / 2
    reloaded, _ = quantize_abq(tiny.model, tokens, ABQConfig(w_bits=2, group_size=32, epochs=4), learned)
    assert torch.equal(reloaded.layers[1].feed_forward.w2.packed, calibrated.layers[1].feed_forward.w2.packed)


def test_a8_quantizes_activations_and_reports_bits(tiny):
    runner = get_method("quant.abq_arbitrary_bit").apply(tiny, ABQConfig(w_bits=4, a_bits=8, epochs=1))
    assert isinstance(runner, PlainDecoder), "a weight transform runs on the family's plain decoder"
    assert runner.stats["a_bits"] == 8 and runner.stats["storage_bits"] == 4
    assert runner.model.layers[0].attention.wq.a_bits == 8
    with pytest.raises(ValueError, match="w_bits"):
        get_method("quant.abq_arbitrary_bit").apply(tiny, ABQConfig(w_bits=9))


def abq_stats(bundle, config: ABQConfig) -> dict:
    """The stats of ABQ's runner (a PlainDecoder), typed loosely as the tests read them."""
    runner: Any = get_method("quant.abq_arbitrary_bit").apply(bundle, config)
    return runner.stats


@pytest.mark.slow
def test_w2_figures_say_five_levels_in_three_bits(tiny):
    """ABQ's "W2" with bit balance is five levels stored as 3-bit codes: its records say so."""
    balanced = abq_stats(tiny, ABQConfig(w_bits=2, group_size=32, epochs=0))
    assert (balanced["levels"], balanced["storage_bits"]) == (5, 3)
    assert balanced["effective_bits"] == pytest.approx(2.322, abs=1e-3)
    assert 3 < balanced["bits_per_weight"] < 3 + 32 / 32 + 1e-6  # codes + fp16 scale and zero per 32 weights
    plain = abq_stats(tiny, ABQConfig(w_bits=2, group_size=32, epochs=0, bit_balance=False))
    assert (plain["levels"], plain["storage_bits"], plain["effective_bits"]) == (4, 2, 2.0)
    assert plain["bits_per_weight"] < balanced["bits_per_weight"]


def test_the_same_calibration_applies_to_the_minilm_encoder():
    from executors.families.encoder.model import load_encoder_bundle

    encoder = load_encoder_bundle()
    config = ABQConfig(w_bits=4, calibration_windows=2, calibration_len=16, epochs=1)
    method = get_method("quant.abq_arbitrary_bit")
    assert method.supports(encoder, torch.device("cpu")) is None
    runner = method.apply(encoder, config)
    assert isinstance(runner.model.layers[5].feed_forward.w2, LowBitLinear)
    ids, mask = encoder.tokenizer.batch(list(encoder.heldout_texts[:4]))
    with torch.no_grad():
        cosine = (runner.model(ids, mask) * encoder.model(ids, mask)).sum(-1)
    assert cosine.min() > 0.9
