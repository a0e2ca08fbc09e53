from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from accel_kernels import double_sparsity as ds

# (batch, heads, kv_heads, seq, dim, label channels r, top_k): ragged lengths, GQA, top_k past
# the sequence length, dims that are not powers of two.
CASES = [
    (2, 4, 2, 100, 32, 8, 24, torch.float32),
    (1, 2, 2, 70, 48, 6, 80, torch.float16),
    (2, 4, 1, 130, 64, 16, 33, torch.bfloat16),
]


def _inputs(case, generator):
    batch, heads, kv_heads, seq, dim, r, top_k, dtype = case
    q = torch.randn(batch, heads, dim, generator=generator).to(dtype)
    k_cache = torch.randn(batch, kv_heads, seq, dim, generator=generator).to(dtype)
    v_cache = torch.randn(batch, kv_heads, seq, dim, generator=generator).to(dtype)
    channels = ds.calibrate_channels(
        torch.randn(50, heads, dim, generator=generator), torch.randn(50, kv_heads, dim, generator=generator), r
    )
    seq_lens = torch.tensor([seq, seq - 37][:batch], dtype=torch.int32)
    return q, k_cache, v_cache, ds.build_label_cache(k_cache, channels), channels, seq_lens, top_k


def _dense_attention(q, k_cache, v_cache, seq_lens):
    group = q.shape[1] // k_cache.shape[1]
    keep = (torch.arange(k_cache.shape[2])[None, :] < seq_lens[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(
        q.float()[:, :, None],
        k_cache.float().repeat_interleave(group, 1),
        v_cache.float().repeat_interleave(group, 1),
        attn_mask=keep,
    )
    return out[:, :, 0].to(q.dtype)


@pytest.mark.parametrize("case", CASES)
def test_label_scores_kernel_matches_reference(case, generator):
    q, _, _, labels, channels, seq_lens, _ = _inputs(case, generator)
    expected = ds.approximate_scores_reference(q, labels, channels, seq_lens)
    actual = ds.approximate_scores(q, labels, channels, seq_lens)
    assert torch.equal(actual.isinf(), expected.isinf())
    finite = expected.isfinite()
    assert torch.allclose(actual[finite], expected[finite], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_gathered_attention_kernel_matches_reference(case, generator, assert_matches):
    q, k_cache, v_cache, labels, channels, seq_lens, top_k = _inputs(case, generator)
    scores = ds.approximate_scores_reference(q, labels, channels, seq_lens)
    indices = scores.topk(min(top_k, k_cache.shape[2]), dim=-1).indices
    scale = 1 / math.sqrt(q.shape[2])
    assert_matches(
        ds.sparse_attention(q, k_cache, v_cache, indices, seq_lens, scale),
        ds.sparse_attention_reference(q, k_cache, v_cache, indices, seq_lens, scale),
        q.dtype,
    )


@pytest.mark.parametrize("case", CASES)
def test_decode_matches_reference_end_to_end(case, generator, assert_matches):
    q, k_cache, v_cache, labels, channels, seq_lens, top_k = _inputs(case, generator)
    args = (q, k_cache, v_cache, labels, channels, top_k)
    assert_matches(
        ds.double_sparsity_decode(*args, seq_lens=seq_lens),
        ds.double_sparsity_decode_reference(*args, seq_lens=seq_lens),
        q.dtype,
    )


@pytest.mark.parametrize("case", CASES)
def test_keeping_every_token_is_dense_attention(case, generator, assert_matches):
    q, k_cache, v_cache, labels, channels, seq_lens, _ = _inputs(case, generator)
    dense = _dense_attention(q, k_cache, v_cache, seq_lens)
    every = k_cache.shape[2]
    for fn in (ds.double_sparsity_decode, ds.double_sparsity_decode_reference):
        assert_matches(fn(q, k_cache, v_cache, labels, channels, every, seq_lens=seq_lens), dense, q.dtype)


def test_calibration_finds_the_outlier_channels_and_topk_finds_the_needle(generator):
    """Keys and queries with large planted channels: calibration picks exactly those, and the
    label-cache scores then rank a planted 'needle' key first, so 4 of 200 tokens suffice."""
    heads, dim, seq = 2, 32, 200
    outliers = torch.tensor([3, 17, 29])
    boost = torch.ones(dim)
    boost[outliers] = 8.0
    channels = ds.calibrate_channels(
        torch.randn(64, heads, dim, generator=generator) * boost,
        torch.randn(64, heads, dim, generator=generator) * boost,
        3,
    )
    assert channels.tolist() == [outliers.tolist()] * heads
    q = torch.randn(1, heads, dim, generator=generator) * boost
    k_cache = torch.randn(1, heads, seq, dim, generator=generator) * 0.1
    v_cache = torch.randn(1, heads, seq, dim, generator=generator)
    k_cache[0, :, 123] = q[0] * 2.0  # the needle: aligned with the query
    labels = ds.build_label_cache(k_cache, channels)
    out = ds.double_sparsity_decode(q, k_cache, v_cache, labels, channels, top_k=4)
    assert torch.allclose(out, v_cache[:, :, 123], atol=1e-3)
    assert torch.allclose(out, _dense_attention(q, k_cache, v_cache, torch.tensor([seq])), atol=1e-3)


def test_shape_checks(generator):
    q, k_cache, v_cache, labels, channels, _, _ = _inputs(CASES[0], generator)
    with pytest.raises(ValueError):
        ds.double_sparsity_decode_reference(q, k_cache, v_cache[:, :, :10], labels, channels, 4)
    with pytest.raises(ValueError):
        ds.double_sparsity_decode_reference(q[:, :3], k_cache, v_cache, labels, channels, 4)
    with pytest.raises(ValueError):
        ds.double_sparsity_decode_reference(q, k_cache, v_cache, labels, channels, 0)
