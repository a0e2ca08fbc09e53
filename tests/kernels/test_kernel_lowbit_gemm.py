from __future__ import annotations

import pytest
import torch

from accel_kernels.anybit_gemm import anybit_matmul, anybit_matmul_reference
from accel_kernels.lowbit_gemm import (
    gemm_autotune_configs,
    lowbit_matmul,
    lowbit_matmul_reference,
    prune_configs_for_groups,
)
from accel_kernels.quant_pack import dequantize_weight, quantize_weight

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
# (M, N, K, group_size): decode rows, prefill-like rows, sizes off the 16/64-tiles, a ragged last
# group, several K steps per group, and one group spanning all of K.
SHAPES = [(1, 33, 70, 32), (5, 96, 96, 32), (16, 70, 33, 64), (3, 40, 64, 16), (17, 20, 130, 64), (2, 65, 48, 4096)]


def _case(shape, bits, dtype, generator, symmetric=False, layout="stream"):
    m, n, k, group_size = shape
    weight = torch.randn(n, k, generator=generator)
    x = torch.randn(m, k, generator=generator).to(dtype)
    return x, quantize_weight(weight, bits, group_size, symmetric=symmetric, layout=layout)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bits", [4, 8])
def test_int4_int8_kernel_matches_reference(shape, bits, generator, assert_matches):
    for dtype in DTYPES:
        x, pw = _case(shape, bits, dtype, generator, symmetric=dtype == torch.float16)
        assert_matches(lowbit_matmul(x, pw), lowbit_matmul_reference(x, pw), dtype)


def test_int2_uses_the_aligned_kernel_too(generator, assert_matches):
    x, pw = _case((4, 50, 96, 32), 2, torch.float16, generator)
    assert_matches(lowbit_matmul(x, pw), lowbit_matmul_reference(x, pw), torch.float16)


def test_reference_is_the_matmul_with_the_dequantised_weight(generator):
    x, pw = _case((3, 20, 70, 32), 4, torch.float32, generator)
    expected = x @ dequantize_weight(pw).T
    assert torch.allclose(lowbit_matmul(x, pw), expected, atol=1e-4, rtol=1e-5)


def test_non_contiguous_activations(generator, assert_matches):
    x, pw = _case((6, 33, 70, 32), 4, torch.float16, generator)
    strided = torch.randn(70, 6, generator=generator).to(torch.float16).T  # column-major view
    assert not strided.is_contiguous()
    assert_matches(lowbit_matmul(strided, pw), lowbit_matmul_reference(strided.contiguous(), pw), torch.float16)


def test_kernels_refuse_what_they_cannot_do(generator):
    x, pw = _case((2, 20, 70, 24), 4, torch.float16, generator)
    with pytest.raises(ValueError, match="multiple of 16"):
        lowbit_matmul(x, pw)
    x3, pw3 = _case((2, 20, 64, 32), 3, torch.float16, generator)
    with pytest.raises(ValueError, match="anybit"):
        lowbit_matmul(x3, pw3)
    with pytest.raises(ValueError, match="planes"):
        anybit_matmul(x3, pw3)
    with pytest.raises(ValueError, match="must be"):
        lowbit_matmul(x3[:, :60], pw)


@pytest.mark.parametrize("bits", range(2, 9))
def test_anybit_kernel_matches_reference_for_every_width(bits, generator, assert_matches):
    for shape, dtype in zip(SHAPES[:3], DTYPES, strict=True):
        x, pw = _case(shape, bits, dtype, generator, symmetric=bits % 2 == 0, layout="planes")
        expected = lowbit_matmul_reference(x, pw)
        assert_matches(anybit_matmul(x, pw), expected, dtype)
        assert_matches(anybit_matmul_reference(x, pw), expected, dtype)


def test_anybit_ragged_group_and_per_channel(generator, assert_matches):
    for shape in SHAPES[4:]:
        x, pw = _case(shape, 5, torch.float32, generator, layout="planes")
        assert_matches(anybit_matmul(x, pw), lowbit_matmul_reference(x, pw), torch.float32)


@pytest.mark.parametrize("group_size", [16, 32, 64, 128, 4096])
@pytest.mark.parametrize("m", [1, 16, 17, 512])
def test_autotune_keeps_only_configs_whose_k_step_fits_a_group(group_size, m):
    k = 4096
    args = {"group_size": group_size, "groups": -(-k // group_size), "M": m}
    kept = prune_configs_for_groups(gemm_autotune_configs(), args)
    assert kept
    for config in kept:
        assert args["groups"] == 1 or group_size % config.kwargs["BLOCK_K"] == 0
        assert (config.kwargs["BLOCK_M"] == 16) == (m <= 16)
