from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from accel_kernels import block_sparse_attn as bsa

# (batch, heads, kv_heads, q_len, kv_len, dim, block, dtype): lengths off the block size,
# q and kv of different lengths, GQA, a dim that needs padding to a power of two.
CASES = [
    (1, 2, 2, 70, 70, 32, 16, torch.float32),
    (2, 2, 1, 33, 50, 24, 16, torch.float16),
    (1, 1, 1, 96, 90, 64, 32, torch.bfloat16),
]


def _inputs(case, generator):
    batch, heads, kv_heads, q_len, kv_len, dim, block, dtype = case
    q = torch.randn(batch, heads, q_len, dim, generator=generator).to(dtype)
    k = torch.randn(batch, kv_heads, kv_len, dim, generator=generator).to(dtype)
    v = torch.randn(batch, kv_heads, kv_len, dim, generator=generator).to(dtype)
    blocks = (batch, heads, -(-q_len // block), -(-kv_len // block))
    return q, k, v, block, blocks


@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_reference_on_random_masks(case, generator, assert_matches):
    q, k, v, block, blocks = _inputs(case, generator)
    mask = torch.rand(blocks, generator=generator) < 0.5
    mask[0, 0, 0] = False  # a query block with nothing kept
    out = bsa.block_sparse_attention(q, k, v, mask, block)
    assert_matches(out, bsa.block_sparse_attention_reference(q, k, v, mask, block), q.dtype)
    assert out[0, 0, :block].abs().max() == 0


@pytest.mark.parametrize("case", CASES)
def test_full_mask_is_dense_attention(case, generator, assert_matches):
    q, k, v, block, blocks = _inputs(case, generator)
    group = q.shape[1] // k.shape[1]
    dense = F.scaled_dot_product_attention(
        q.float(), k.float().repeat_interleave(group, 1), v.float().repeat_interleave(group, 1)
    ).to(q.dtype)
    full = torch.ones(1, 1, *blocks[2:], dtype=torch.bool)  # broadcast over batch and heads
    assert_matches(bsa.block_sparse_attention(q, k, v, full, block), dense, q.dtype)


def test_layout_built_once_is_reused(generator):
    q, k, v, block, blocks = _inputs(CASES[0], generator)
    mask = torch.rand(blocks, generator=generator) < 0.3
    layout = bsa.block_layout(mask, block, *blocks[:2])
    assert layout.kv_block_counts.tolist() == mask.sum(-1).tolist()
    first = layout.kv_block_ids[0, 0, 0, : int(layout.kv_block_counts[0, 0, 0])]
    assert first.tolist() == mask[0, 0, 0].nonzero().flatten().tolist()
    for _ in range(2):  # e.g. two denoising steps with fresh activations
        q = torch.randn_like(q)
        assert torch.equal(
            bsa.block_sparse_attention(q, k, v, layout, block), bsa.block_sparse_attention(q, k, v, mask, block)
        )


def test_mask_search_keeps_the_blocks_that_carry_attention(generator):
    """Block-diagonal attention (tokens attend within their block): the search at 90 % coverage
    keeps just the diagonal, and the sparse kernel then equals dense attention."""
    block, n_blocks, dim = 16, 4, 32
    centres = torch.randn(n_blocks, dim, generator=generator) * 4
    noise = 0.1 * torch.randn(n_blocks * block, dim, generator=generator)
    tokens = centres.repeat_interleave(block, 0) + noise
    q = k = tokens[None, None]
    v = torch.randn(1, 1, n_blocks * block, dim, generator=generator)
    mask = bsa.select_block_mask(q, k, block, coverage=0.9, q_chunk_blocks=3)
    assert torch.equal(mask[0, 0], torch.eye(n_blocks, dtype=torch.bool))
    dense = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(bsa.block_sparse_attention(q, k, v, mask, block), dense, atol=1e-3)


def test_lower_coverage_keeps_fewer_blocks_per_head(generator):
    q, k, _, block, _ = _inputs(CASES[0], generator)
    densities = [
        bsa.block_layout(bsa.select_block_mask(q, k, block, c), block, 1, 2).density for c in (0.3, 0.6, 0.9, 1.0)
    ]
    assert densities == sorted(densities) and densities[0] < densities[-1] == 1.0


def test_mask_shape_is_checked(generator):
    q, k, v, block, blocks = _inputs(CASES[0], generator)
    with pytest.raises(ValueError, match="does not tile"):
        bsa.block_sparse_attention_reference(q, k, v, torch.ones(1, 1, 2, 2, dtype=torch.bool), block)
    with pytest.raises(ValueError, match="bool"):
        bsa.block_sparse_attention(q, k, v, torch.ones(blocks), block)
