"""The quantization methods against their references: kernels' INT4 format, int8 weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from accel_kernels.dispatch import lowbit_linear
from accel_kernels.quant_pack import dequantize_weight, quantize_weight
from executors.methods.quant.int8_dynamic import Int8DynamicConfig, quantize_int8_dynamic
from executors.methods.quant.weight_only_int4 import Int4Linear, WeightOnlyInt4Config, quantize_int4


@pytest.mark.parametrize(("in_features", "group_size", "symmetric"), [(64, 32, True), (72, 32, False), (48, 128, True)])
def test_int4_cpu_path_equals_the_kernels_reference(in_features, group_size, symmetric):
    torch.manual_seed(0)
    weight, bias = torch.randn(24, in_features), torch.randn(24)
    packed = quantize_weight(weight, 4, group_size, symmetric=symmetric)
    layer = Int4Linear(packed, bias)
    torch.testing.assert_close(layer.dequantized(), dequantize_weight(packed))
    x = torch.randn(3, 5, in_features)
    torch.testing.assert_close(layer(x), lowbit_linear(x, packed, bias), atol=1e-4, rtol=1e-4)


def test_int4_model_stores_four_bits_and_keeps_embeddings(tiny):
    quantized = quantize_int4(tiny.model, WeightOnlyInt4Config(group_size=32))
    linear = quantized.layers[0].feed_forward.w1
    assert isinstance(linear, Int4Linear) and linear.packed.dtype == torch.uint8
    assert linear.packed.numel() * 2 == linear.in_features * linear.out_features
    assert isinstance(tiny.model.layers[0].feed_forward.w1, nn.Linear), "the original model is untouched"
    assert torch.equal(quantized.tok_embeddings.weight, tiny.model.tok_embeddings.weight)


def test_int8_quantizes_block_linears_but_not_the_head_by_default(tiny):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    quantized = quantize_int8_dynamic(tiny.model, Int8DynamicConfig())
    assert isinstance(quantized.layers[0].attention.wq, DynamicInt8Linear)
    assert type(quantized.output) is nn.Linear
    with_head = quantize_int8_dynamic(tiny.model, Int8DynamicConfig(include_head=True))
    assert isinstance(with_head.output, DynamicInt8Linear)
    assert with_head.tok_embeddings.weight.dtype == torch.float32, "untying the head keeps the embedding"
    tokens = torch.randint(0, 256, (2, 16))
    with torch.inference_mode():
        reference = torch.softmax(tiny.model(tokens), -1)
        approx = torch.softmax(with_head(tokens), -1)
    assert (reference - approx).abs().max() < 0.05
