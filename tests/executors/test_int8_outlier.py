"""Outlier-aware int8: one massive token no longer wrecks the others; the descriptor that warns plain int8."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from executors.activations import linear_input_stats
from executors.families.lm.workloads import calibration_windows
from executors.families.lm.zoo import lm_bundle, measured_outlier_ratio
from executors.methods.quant.int8_dynamic import PER_TENSOR_OUTLIER_BOUND, Int8DynamicConfig, quantize_int8_dynamic
from executors.methods.quant.int8_outlier import (
    Int8OutlierConfig,
    OutlierInt8Linear,
    quantize_outlier_aware,
    smoothing_factors,
)
from executors.registry import get_method

CPU = torch.device("cpu")


def massive_first_row(rows: int = 8, features: int = 64) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(rows, features)
    x[0] *= 3000.0  # the size of SmolLM2's first-token inputs at layers.11 down_proj against a typical token
    return x


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return ((approx - exact).norm() / exact.norm()).item()


def test_per_token_scales_keep_the_other_tokens_exact_where_per_tensor_loses_them():
    torch.manual_seed(1)
    linear = nn.Linear(64, 32)
    x = massive_first_row()
    with torch.inference_mode():
        exact = linear(x)[1:]
        per_token = OutlierInt8Linear.from_linear(linear, None, per_token=True)(x)[1:]
        per_tensor = OutlierInt8Linear.from_linear(linear, None, per_token=False)(x)[1:]
        alone = OutlierInt8Linear.from_linear(linear, None, per_token=True)(x[1:])
    assert relative_error(per_token, exact) < 0.02
    assert relative_error(per_tensor, exact) > 0.5, "one scale for all rows rounds the typical rows away"
    torch.testing.assert_close(per_token, alone)  # a row's output does not depend on the other rows


def test_smoothing_moves_the_channel_range_into_the_weights_and_keeps_the_product():
    torch.manual_seed(2)
    linear = nn.Linear(64, 16, bias=False)
    x = torch.randn(32, 64)
    x[:, 5] *= 200.0  # a channel outlier, what SmoothQuant is for
    stats = linear_input_stats(nn.Sequential(linear), x[None], skip=())
    smooth = smoothing_factors(linear, stats["0"].channel_absmax, alpha=0.5)
    assert smooth.argmax() == 5 and smooth[5] > 10 * smooth.median()
    layer = OutlierInt8Linear.from_linear(linear, smooth, per_token=True)
    weight = layer.int8.weight().dequantize()
    torch.testing.assert_close(weight[:, 5], linear.weight[:, 5].detach() * smooth[5], rtol=0.02, atol=1e-3)
    with torch.inference_mode():
        smoothed, plain = layer(x), OutlierInt8Linear.from_linear(linear, None, per_token=True)(x)
        exact = linear(x)
    assert relative_error(smoothed, exact) < relative_error(plain, exact)


def massive_token_lm(tiny):
    """lm-tiny with one token made to carry massive activations into layer 0's FFN down projection
    (its embedding is one channel that layer 0's FFN norm amplifies; no other token and no
    attention output reaches that channel), as pretrained LMs' first tokens do."""
    model = copy.deepcopy(tiny.model)
    windows = calibration_windows(tiny, 2, 128)
    token = int(windows.flatten().mode().values)
    channel = 0
    with torch.no_grad():
        model.tok_embeddings.weight[:, channel] = 0.0
        model.tok_embeddings.weight[token] = 0.0
        model.tok_embeddings.weight[token, channel] = 10.0
        model.layers[0].attention.wo.weight[channel] = 0.0
        model.layers[0].ffn_norm.weight[channel] = 300.0
    bundle = lm_bundle(model, tiny.tokenizer, "test:massive", "massive")
    return dataclasses.replace(bundle, heldout_texts=tiny.heldout_texts), token


def test_descriptor_and_supports_see_what_per_tensor_int8_will_break(tiny):
    assert measured_outlier_ratio(tiny) < PER_TENSOR_OUTLIER_BOUND
    assert get_method("quant.int8_dynamic").supports(tiny, CPU) is None
    broken, _ = massive_token_lm(tiny)
    ratio = broken.spec.extra["activation_outlier_ratio"]
    assert ratio > 100 * PER_TENSOR_OUTLIER_BOUND
    reason = get_method("quant.int8_dynamic").supports(broken, CPU)
    assert reason is not None and "quant.int8_outlier" in reason
    assert get_method("quant.int8_outlier").supports(broken, CPU) is None


def ffn_output(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Layer 0's feed-forward output, where the massive token's down projection input enters."""
    seen = []
    handle = model.layers[0].feed_forward.register_forward_hook(lambda mod, args, out: seen.append(out))
    with torch.inference_mode():
        model(windows)
    handle.remove()
    return seen[0]


def test_outlier_aware_int8_keeps_the_typical_tokens_where_plain_int8_loses_them(tiny):
    broken, token = massive_token_lm(tiny)
    windows = calibration_windows(broken, 4, 64)
    typical = windows != token
    exact = ffn_output(broken.model, windows)[typical]
    plain = ffn_output(quantize_int8_dynamic(broken.model, Int8DynamicConfig()), windows)[typical]
    # per-token scales alone: the massive token gets its own scale (the default adds smoothing,
    # whose channel maxima here come from that one token: docs/low-bit.md)
    per_token = Int8OutlierConfig(smooth_alpha=0.0)
    outlier = ffn_output(get_method("quant.int8_outlier").apply(broken, per_token).model, windows)[typical]
    assert relative_error(outlier, exact) < 0.05
    assert relative_error(plain, exact) > 0.5, "per-tensor scales round the typical tokens' inputs away"


def test_outlier_layers_stay_in_float_when_asked(tiny):
    broken, _ = massive_token_lm(tiny)
    windows = calibration_windows(broken, 2, 64)
    stats = linear_input_stats(broken.model, windows)
    config = Int8OutlierConfig(per_token=False, keep_outlier_layers=True)
    quantized, kept = quantize_outlier_aware(broken.model, stats, config)
    assert "layers.0.feed_forward.w2" in kept
    assert type(quantized.layers[0].feed_forward.w2) is nn.Linear
    assert isinstance(quantized.layers[1].feed_forward.w2, OutlierInt8Linear)
    assert type(quantized.output) is nn.Linear, "the head stays fp32"


def test_config_limits():
    from executors.registry import config_from_json

    with pytest.raises(ValueError, match="smooth_alpha"):
        config_from_json({"method": "quant.int8_outlier", "params": {"smooth_alpha": 1.5}})
