from __future__ import annotations

import pytest
import torch

from accel_kernels.quant_pack import (
    dequantize_weight,
    pack_bit_planes,
    pack_bits,
    packed_row_bytes,
    quantize_weight,
    to_layout,
    unpack_bit_planes,
    unpack_bits,
    unpack_codes,
)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("k", [1, 7, 37, 64])
def test_pack_round_trips_every_width_in_exact_bytes(bits, k, generator):
    codes = torch.randint(0, 1 << bits, (3, 5, k), generator=generator, dtype=torch.int32)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 5, (k * bits + 7) // 8)
    assert torch.equal(unpack_bits(packed, bits, k), codes)


@pytest.mark.parametrize("bits", range(2, 9))
def test_bit_planes_round_trip_in_the_same_bytes_per_weight(bits, generator):
    codes = torch.randint(0, 1 << bits, (4, 64), generator=generator, dtype=torch.int32)
    planes = pack_bit_planes(codes, bits)
    assert planes.shape == (4, bits * 8) and planes.numel() == pack_bits(codes, bits).numel()
    assert torch.equal(unpack_bit_planes(planes, bits, 64), codes)
    # plane i holds bit i of every code, 8 codes per byte, lowest code in the lowest bit
    top_bits = [(int(c) >> (bits - 1)) & 1 for c in codes[0, :8]]
    assert planes[0, 8 * (bits - 1)] == sum(bit << j for j, bit in enumerate(top_bits))


def test_layouts_convert_both_ways_and_dequantise_alike(generator):
    weight = torch.randn(6, 37, generator=generator)
    stream = quantize_weight(weight, 3, 16)
    planes = to_layout(stream, "planes")
    assert planes.layout == "planes" and planes.packed.shape == (6, 3 * 5)
    assert torch.equal(unpack_codes(planes), unpack_codes(stream))
    assert torch.equal(dequantize_weight(planes), dequantize_weight(stream))
    assert torch.equal(to_layout(planes, "stream").packed, stream.packed)
    assert torch.equal(quantize_weight(weight, 3, 16, layout="planes").packed, planes.packed)
    with pytest.raises(ValueError):
        to_layout(stream, "columns")


def test_int4_is_two_codes_per_byte_low_nibble_first():
    assert pack_bits(torch.tensor([[1, 2, 3]]), 4).tolist() == [[0x21, 0x03]]
    assert pack_bits(torch.tensor([[3, 0, 1, 2, 1]]), 2).tolist() == [[0b10_01_00_11, 0b01]]
    # 3-bit codes straddle bytes: 5 | 6<<3 | 7<<6 = 0b11_110_101, then the last bit of 7
    assert pack_bits(torch.tensor([[5, 6, 7]]), 3).tolist() == [[0b11110101, 0b1]]


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([[16]]), 4)
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([[0]]), 9)
    with pytest.raises(TypeError):
        pack_bits(torch.tensor([[0.5]]), 4)
    with pytest.raises(ValueError):
        unpack_bits(torch.zeros(1, 3, dtype=torch.uint8), 4, 7)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_quantisation_error_is_within_half_a_step(bits, symmetric, generator):
    weight = torch.randn(9, 70, generator=generator)
    pw = quantize_weight(weight, bits, group_size=32, symmetric=symmetric)
    assert pw.packed.shape == (9, packed_row_bytes(70, bits)) and pw.scales.shape == (9, 3)
    assert pw.nbytes() == 9 * packed_row_bytes(70, bits) + 2 * 9 * 3 * 2  # fp16 scales and zeros
    step = pw.scales.float().repeat_interleave(32, 1)[:, :70]
    error = (dequantize_weight(pw) - weight).abs()
    if symmetric:  # the symmetric grid does not reach the most negative code: clipping is allowed
        assert (error <= 0.5 * step * 1.01 + 1e-6).float().mean() > 0.98
    else:
        assert (error <= 0.5 * step * 1.01 + 1e-6).all()


def test_more_bits_quantise_more_finely(generator):
    weight = torch.randn(16, 128, generator=generator)
    errors = [float((dequantize_weight(quantize_weight(weight, b, 64)) - weight).pow(2).mean()) for b in range(2, 9)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 1000


def test_constant_and_zero_groups_survive():
    weight = torch.cat([torch.full((2, 16), 0.5), torch.zeros(2, 16), torch.full((2, 16), -3.0)], 1)
    restored = dequantize_weight(quantize_weight(weight, 4, 16))
    assert torch.allclose(restored, weight, atol=1e-3)


def test_group_larger_than_k_is_per_channel(generator):
    weight = torch.randn(4, 40, generator=generator)
    pw = quantize_weight(weight, 8, group_size=4096)
    assert pw.group_size == 40 and pw.groups == 1
    assert (dequantize_weight(pw) - weight).abs().max() < 0.02
