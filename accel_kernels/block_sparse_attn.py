"""Block-sparse attention: a flash-attention kernel that visits only the kept key blocks.

The mask is AdaSpa's notion (Xia et al., arXiv 2502.21079): attention is cut into
``block_size x block_size`` tiles, and for every (batch, head, query block) a set of key blocks
is kept — chosen once from exact attention mass (:func:`select_block_mask`, head-adaptive: each
head keeps as many blocks as it needs to reach the coverage) and reused across denoising steps.
:func:`block_layout` turns the mask into per-row lists of kept block ids once, so the kernel's
loop runs over kept blocks only instead of testing every block.

Kernel: one program per (query block, batch x head); online softmax (running max and sum,
rescaled accumulator) over the kept key blocks; keys past the sequence end are masked, so
lengths need not be multiples of the block. A query block with no kept key block outputs zeros.

Shapes: q ``[B, H, Sq, D]``; k, v ``[B, Hkv, Skv, D]`` (H a multiple of Hkv); block_mask bool
``[B or 1, H or 1, ceil(Sq / block), ceil(Skv / block)]``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from accel_kernels.lowbit_gemm import interpreting


@dataclass(frozen=True)
class BlockSparseLayout:
    """A block mask and its per-row kept-block lists, built once and reused across calls."""

    mask: torch.Tensor  # bool [B, H, q_blocks, kv_blocks]
    kv_block_ids: torch.Tensor  # int32 [B, H, q_blocks, kv_blocks]: kept ids first, ascending
    kv_block_counts: torch.Tensor  # int32 [B, H, q_blocks]
    block_size: int

    @property
    def density(self) -> float:
        return float(self.mask.float().mean())


def block_layout(block_mask: torch.Tensor, block_size: int, batch: int, heads: int) -> BlockSparseLayout:
    if block_mask.dtype != torch.bool or block_mask.dim() != 4:
        raise ValueError("block_mask must be a 4-d bool tensor [B|1, H|1, q_blocks, kv_blocks]")
    mask = block_mask.expand(batch, heads, -1, -1).contiguous()
    # a stable sort of "not kept" puts the kept ids first, in order, without a host sync
    ids = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32).contiguous()
    counts = mask.sum(-1, dtype=torch.int32).contiguous()
    return BlockSparseLayout(mask, ids, counts, block_size)


def _as_layout(q, k, block_mask, block_size) -> BlockSparseLayout:
    batch, heads, q_len, _ = q.shape
    if k.shape[0] != batch or heads % k.shape[1] or k.shape[3] != q.shape[3]:
        raise ValueError(f"k must be [{batch}, Hkv, Skv, {q.shape[3]}] with H a multiple of Hkv")
    layout = (
        block_mask if isinstance(block_mask, BlockSparseLayout) else block_layout(block_mask, block_size, batch, heads)
    )
    expected = (batch, heads, -(-q_len // block_size), -(-k.shape[2] // block_size))
    if layout.block_size != block_size or tuple(layout.mask.shape) != expected:
        raise ValueError(
            f"block mask {tuple(layout.mask.shape)} does not tile q/k in blocks of {block_size}: expected {expected}"
        )
    return layout


def block_sparse_attention_reference(q, k, v, block_mask, block_size, sm_scale=None) -> torch.Tensor:
    """Dense attention with the block mask expanded to tokens; rows with nothing kept are 0."""
    layout = _as_layout(q, k, block_mask, block_size)
    group = q.shape[1] // k.shape[1]
    token_mask = layout.mask.repeat_interleave(block_size, 2).repeat_interleave(block_size, 3)[
        :, :, : q.shape[2], : k.shape[2]
    ]
    scale = 1.0 / math.sqrt(q.shape[3]) if sm_scale is None else sm_scale
    scores = q.float() @ k.float().repeat_interleave(group, 1).transpose(2, 3) * scale
    probs = scores.masked_fill(~token_mask, float("-inf")).softmax(-1).nan_to_num(0.0)
    return (probs @ v.float().repeat_interleave(group, 1)).to(q.dtype)


def select_block_mask(q, k, block_size: int, coverage: float = 0.9, q_chunk_blocks: int = 16) -> torch.Tensor:
    """AdaSpa-style search: per (batch, head, query block) keep the fewest key blocks whose
    exact attention mass reaches ``coverage``. Returns bool ``[B, H, q_blocks, kv_blocks]``.

    Query blocks are processed ``q_chunk_blocks`` at a time so memory stays at
    ``chunk x Skv`` scores per head, never ``Sq x Skv``.
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    batch, heads, q_len, dim = q.shape
    group = heads // k.shape[1]
    keys = k.float().repeat_interleave(group, 1)
    kv_len = k.shape[2]
    kv_blocks = -(-kv_len // block_size)
    pad = kv_blocks * block_size - kv_len
    rows = []
    for start in range(0, q_len, q_chunk_blocks * block_size):
        chunk = q[:, :, start : start + q_chunk_blocks * block_size].float()
        probs = (chunk @ keys.transpose(2, 3) / math.sqrt(dim)).softmax(-1)
        probs = torch.nn.functional.pad(probs, (0, pad, 0, -chunk.shape[2] % block_size))
        mass = probs.reshape(batch, heads, -1, block_size, kv_blocks, block_size).sum((3, 5))
        mass = mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)  # padded rows weigh nothing
        ordered, order = mass.sort(-1, descending=True)
        keep_sorted = (ordered.cumsum(-1) - ordered) < coverage  # blocks needed to reach coverage
        rows.append(torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted))
    return torch.cat(rows, dim=2)


@functools.cache
def _kernels():
    """Defines the Triton function on first use (importing this module needs no triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def block_sparse_attn_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        out_ptr,
        ids_ptr,
        counts_ptr,
        H,
        group,
        q_len,
        kv_len,
        D,
        q_blocks,
        kv_blocks,
        sm_scale,
        stride_qb,
        stride_qh,
        stride_qs,
        stride_kb,
        stride_kh,
        stride_ks,
        stride_vb,
        stride_vh,
        stride_vs,
        stride_ob,
        stride_oh,
        stride_os,
        BLOCK: tl.constexpr,
        BLOCK_D: tl.constexpr,
        DOT_FP32: tl.constexpr,
    ):
        q_block = tl.program_id(0)
        bh = tl.program_id(1)
        b, h = (bh // H).to(tl.int64), bh % H  # int64: batch offsets of a long KV pass 2**31
        kv_head = h // group
        offs_m = q_block * BLOCK + tl.arange(0, BLOCK)
        offs_d = tl.arange(0, BLOCK_D)
        in_d = offs_d < D
        q = tl.load(
            q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :],
            mask=(offs_m < q_len)[:, None] & in_d[None, :],
            other=0.0,
        )
        if DOT_FP32:
            q = q.to(tl.float32)
        k_base = k_ptr + b * stride_kb + kv_head * stride_kh
        v_base = v_ptr + b * stride_vb + kv_head * stride_vh
        row = bh * q_blocks + q_block
        kept = tl.load(counts_ptr + row)
        running_max = tl.full((BLOCK,), float("-inf"), dtype=tl.float32)
        running_sum = tl.zeros((BLOCK,), dtype=tl.float32)
        acc = tl.zeros((BLOCK, BLOCK_D), dtype=tl.float32)
        for j in range(0, kept):
            kv_block = tl.load(ids_ptr + row * kv_blocks + j)
            offs_n = kv_block * BLOCK + tl.arange(0, BLOCK)
            in_n = offs_n < kv_len
            tile_mask = in_n[:, None] & in_d[None, :]
            keys = tl.load(k_base + offs_n[:, None] * stride_ks + offs_d[None, :], mask=tile_mask, other=0.0)
            values = tl.load(v_base + offs_n[:, None] * stride_vs + offs_d[None, :], mask=tile_mask, other=0.0)
            if DOT_FP32:
                keys = keys.to(tl.float32)
                values = values.to(tl.float32)
            scores = tl.dot(q, tl.trans(keys)) * sm_scale
            scores = tl.where(in_n[None, :], scores, float("-inf"))
            new_max = tl.maximum(running_max, tl.max(scores, axis=1))  # finite: a kept block has a key
            correction = tl.exp(running_max - new_max)
            probs = tl.exp(scores - new_max[:, None])
            running_sum = running_sum * correction + tl.sum(probs, axis=1)
            acc = acc * correction[:, None] + tl.dot(probs.to(values.dtype), values)
            running_max = new_max
        out = acc / tl.where(running_sum > 0, running_sum, 1.0)[:, None]
        tl.store(
            out_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=(offs_m < q_len)[:, None] & in_d[None, :],
        )

    return triton, block_sparse_attn_kernel


def block_sparse_attention(q, k, v, block_mask, block_size, sm_scale=None) -> torch.Tensor:
    """Triton block-sparse attention; ``block_mask`` may be a bool mask or a :class:`BlockSparseLayout`."""
    layout = _as_layout(q, k, block_mask, block_size)
    if block_size not in (16, 32, 64, 128):
        raise ValueError(f"block_size must be 16, 32, 64 or 128 for the kernel, got {block_size}")
    if v.shape != k.shape or q.stride(3) != 1 or k.stride(3) != 1 or v.stride(3) != 1:
        raise ValueError("v must match k, and q/k/v need contiguous last dimensions")
    triton, kernel = _kernels()
    batch, heads, q_len, dim = q.shape
    out = torch.empty_like(q)
    q_blocks, kv_blocks = layout.mask.shape[2:]
    scale = 1.0 / math.sqrt(dim) if sm_scale is None else sm_scale
    dot_fp32 = interpreting() or q.dtype == torch.float32  # bf16 dots are wrong in the interpreter
    block_d = max(16, triton.next_power_of_2(dim))
    warps = 4 if block_size <= 64 else 8
    kernel[(q_blocks, batch * heads)](
        q,
        k,
        v,
        out,
        layout.kv_block_ids,
        layout.kv_block_counts,
        heads,
        heads // k.shape[1],
        q_len,
        k.shape[2],
        dim,
        q_blocks,
        kv_blocks,
        scale,
        q.stride(0),
        q.stride(1),
        q.stride(2),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        BLOCK=block_size,
        BLOCK_D=block_d,
        DOT_FP32=dot_fp32,
        num_warps=warps,
        num_stages=2 if interpreting() else 3,
    )
    return out
