"""Double Sparsity decode attention (Yang et al., arXiv 2408.07092).

One decode query per sequence against a long KV cache, in three steps:
1. approximate scores ``q[channels] . label[t]`` where the *label cache* holds each key's
   ``R`` important channels (found offline by :func:`calibrate_channels`; the paper uses
   R = D/16 .. D/8) — a contiguous read of ``R/D`` of the key cache;
2. top-k token selection on the approximate scores (``torch.topk``: selection is a sort, not
   the memory-bound part);
3. exact softmax attention over the gathered ``top_k`` keys/values only, split across
   programs flash-decoding style (partial max / sum / output per split, merged at the end) so
   one sequence still fills the GPU.

Shapes: q ``[B, H, D]``; k_cache, v_cache ``[B, Hkv, S, D]``; label_cache ``[B, Hkv, S, R]``;
channels ``[Hkv, R]`` (int); seq_lens ``[B]`` valid tokens per sequence (default S). Grouped
query attention: query head h reads KV head ``h // (H // Hkv)``. The paper's optional 4-bit
label cache and CPU offload are not implemented here.
"""

from __future__ import annotations

import functools
import math

import torch

from accel_kernels.lowbit_gemm import interpreting


def calibrate_channels(q_samples: torch.Tensor, k_samples: torch.Tensor, r: int) -> torch.Tensor:
    """The ``r`` channels per KV head that carry most of ``q . k`` on calibration data.

    q_samples ``[T, H, D]``, k_samples ``[T, Hkv, D]`` (tokens from a calibration run). A
    channel's importance is the mean of ``|q_c * k_c|`` over all (query, key) pairs, which
    factorises into ``mean|q_c| * mean|k_c|``; query heads sharing a KV head are summed.
    Returns int64 ``[Hkv, r]``, sorted.
    """
    _, heads, dim = q_samples.shape
    kv_heads = k_samples.shape[1]
    if not 0 < r <= dim:
        raise ValueError(f"r must be in 1..{dim}, got {r}")
    q_mag = q_samples.float().abs().mean(0).reshape(kv_heads, heads // kv_heads, dim).sum(1)
    importance = q_mag * k_samples.float().abs().mean(0)
    return importance.topk(r, dim=-1).indices.sort(dim=-1).values


def build_label_cache(k_cache: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """``[B, Hkv, S, R]``: the keys' important channels, stored contiguously."""
    index = channels[None, :, None, :].expand(k_cache.shape[0], -1, k_cache.shape[2], -1)
    return torch.gather(k_cache, 3, index.to(k_cache.device)).contiguous()


def _checked(q, k_cache, v_cache, label_cache, channels, top_k, seq_lens):
    batch, heads, dim = q.shape
    _, kv_heads, seq, _ = k_cache.shape
    if k_cache.shape != (batch, kv_heads, seq, dim) or v_cache.shape != k_cache.shape:
        raise ValueError(f"k/v caches must be [B, Hkv, S, D] = [{batch}, Hkv, S, {dim}]")
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads do not group over {kv_heads} KV heads")
    if label_cache.shape[:3] != (batch, kv_heads, seq) or channels.shape != (kv_heads, label_cache.shape[3]):
        raise ValueError("label_cache must be [B, Hkv, S, R] and channels [Hkv, R]")
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    if seq_lens is None:
        seq_lens = torch.full((batch,), seq, device=q.device, dtype=torch.int32)
    return seq_lens.to(device=q.device, dtype=torch.int32), min(top_k, seq)


def _scale(q, sm_scale):
    return 1.0 / math.sqrt(q.shape[2]) if sm_scale is None else sm_scale


def approximate_scores_reference(q, label_cache, channels, seq_lens):
    """``[B, H, S]`` fp32 label-cache scores, ``-inf`` past each sequence's length.

    Query heads are viewed as ``[B, Hkv, group, ...]`` rather than the label cache repeated per
    query head: the CPU decode path runs this every step, and it must read ``R/D`` of the keys once.
    """
    batch, heads, dim = q.shape
    kv_heads, seq, r = label_cache.shape[1:]
    group = heads // kv_heads
    q_grouped = q.float().reshape(batch, kv_heads, group, dim)
    q_sel = torch.gather(q_grouped, 3, channels[None, :, None, :].expand(batch, -1, group, -1))
    scores = torch.matmul(q_sel, label_cache.float().transpose(2, 3)).reshape(batch, heads, seq)
    past_end = torch.arange(seq, device=q.device)[None, :] >= seq_lens[:, None]
    return scores.masked_fill(past_end[:, None, :], float("-inf"))


def sparse_attention_reference(q, k_cache, v_cache, indices, seq_lens, sm_scale):
    """Exact attention of q ``[B, H, D]`` over the tokens ``indices`` ``[B, H, k]`` selects.

    Gathers only the selected rows of each KV head (never a per-query-head copy of the cache).
    """
    batch, heads, dim = q.shape
    kv_heads, top_k = k_cache.shape[1], indices.shape[2]
    group = heads // kv_heads
    seq = k_cache.shape[2]
    # Row numbers in the flattened [B * Hkv * S, D] cache: index_select copies whole rows, which
    # on CPU is several times faster than an element-wise gather.
    rows = (
        torch.arange(batch * kv_heads, device=q.device).view(batch, kv_heads, 1) * seq
        + indices.reshape(batch, kv_heads, group * top_k)
    ).reshape(-1)
    keys = k_cache.reshape(-1, dim).index_select(0, rows).float().reshape(batch, kv_heads, group, top_k, dim)
    values = v_cache.reshape(-1, dim).index_select(0, rows).float().reshape(batch, kv_heads, group, top_k, dim)
    q_grouped = q.float().reshape(batch, kv_heads, group, dim, 1)
    scores = torch.matmul(keys, q_grouped).squeeze(-1) * sm_scale  # [B, Hkv, group, k]
    invalid = (indices >= seq_lens[:, None, None]).reshape(batch, kv_heads, group, top_k)
    probs = scores.masked_fill(invalid, float("-inf")).softmax(-1)
    out = torch.matmul(probs[..., None, :], values).squeeze(-2)  # [B, Hkv, group, D]
    return out.reshape(batch, heads, dim).to(q.dtype)


def double_sparsity_decode_reference(q, k_cache, v_cache, label_cache, channels, top_k, seq_lens=None, sm_scale=None):
    """PyTorch Double Sparsity decode: ``[B, H, D]`` in q's dtype."""
    seq_lens, k = _checked(q, k_cache, v_cache, label_cache, channels, top_k, seq_lens)
    scores = approximate_scores_reference(q, label_cache, channels, seq_lens)
    indices = scores.topk(k, dim=-1).indices
    return sparse_attention_reference(q, k_cache, v_cache, indices, seq_lens, _scale(q, sm_scale))


@functools.cache
def _kernels():
    """Defines the Triton functions on first use (importing this module needs no triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def approx_scores_kernel(
        q_ptr,
        label_ptr,
        channels_ptr,
        seq_lens_ptr,
        out_ptr,
        H,
        S,
        R,
        group,
        stride_qb,
        stride_qh,
        stride_lb,
        stride_lh,
        stride_ls,
        BLOCK_S: tl.constexpr,
        BLOCK_R: tl.constexpr,
    ):
        bh = tl.program_id(0)
        b, h = (bh // H).to(tl.int64), bh % H  # int64: batch offsets of a long KV pass 2**31
        kv_head = h // group
        offs_r = tl.arange(0, BLOCK_R)
        in_r = offs_r < R
        chan = tl.load(channels_ptr + kv_head * R + offs_r, mask=in_r, other=0)
        q_sel = tl.load(q_ptr + b * stride_qb + h * stride_qh + chan, mask=in_r, other=0.0).to(tl.float32)
        offs_s = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
        seq_len = tl.load(seq_lens_ptr + b)
        labels = tl.load(
            label_ptr + b * stride_lb + kv_head * stride_lh + offs_s[:, None] * stride_ls + offs_r[None, :],
            mask=(offs_s < seq_len)[:, None] & in_r[None, :],
            other=0.0,
        )
        scores = tl.sum(labels.to(tl.float32) * q_sel[None, :], axis=1)
        scores = tl.where(offs_s < seq_len, scores, float("-inf"))
        tl.store(out_ptr + bh * S + offs_s, scores, mask=offs_s < S)

    @triton.jit
    def gathered_attention_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        idx_ptr,
        seq_lens_ptr,
        part_out_ptr,
        part_max_ptr,
        part_sum_ptr,
        H,
        D,
        TOP_K,
        group,
        tokens_per_split,
        sm_scale,
        stride_qb,
        stride_qh,
        stride_kb,
        stride_kh,
        stride_ks,
        stride_vb,
        stride_vh,
        stride_vs,
        BLOCK_T: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        bh = tl.program_id(0)
        split = tl.program_id(1)
        splits = tl.num_programs(1)
        b, h = (bh // H).to(tl.int64), bh % H  # int64: batch offsets of a long KV pass 2**31
        kv_head = h // group
        offs_d = tl.arange(0, BLOCK_D)
        in_d = offs_d < D
        q = tl.load(q_ptr + b * stride_qb + h * stride_qh + offs_d, mask=in_d, other=0.0).to(tl.float32)
        seq_len = tl.load(seq_lens_ptr + b)
        k_base = k_ptr + b * stride_kb + kv_head * stride_kh
        v_base = v_ptr + b * stride_vb + kv_head * stride_vh
        running_max = float("-inf")
        running_sum = 0.0
        acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        start = split * tokens_per_split
        for t0 in range(start, start + tokens_per_split, BLOCK_T):
            offs_t = t0 + tl.arange(0, BLOCK_T)
            token = tl.load(idx_ptr + bh * TOP_K + offs_t, mask=offs_t < TOP_K, other=0)
            valid = (offs_t < TOP_K) & (offs_t < start + tokens_per_split) & (token < seq_len)
            tile_mask = valid[:, None] & in_d[None, :]
            keys = tl.load(k_base + token[:, None] * stride_ks + offs_d[None, :], mask=tile_mask, other=0.0)
            scores = tl.sum(keys.to(tl.float32) * q[None, :], axis=1) * sm_scale
            scores = tl.where(valid, scores, float("-inf"))
            new_max = tl.maximum(running_max, tl.max(scores, axis=0))
            # a split whose tokens are all invalid keeps max = -inf; guard the exp against nan
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
            correction = tl.exp(running_max - safe_max)
            probs = tl.exp(scores - safe_max)
            values = tl.load(v_base + token[:, None] * stride_vs + offs_d[None, :], mask=tile_mask, other=0.0)
            acc = acc * correction + tl.sum(probs[:, None] * values.to(tl.float32), axis=0)
            running_sum = running_sum * correction + tl.sum(probs, axis=0)
            running_max = new_max
        part = bh * splits + split
        tl.store(part_out_ptr + part * D + offs_d, acc, mask=in_d)
        tl.store(part_max_ptr + part, running_max)
        tl.store(part_sum_ptr + part, running_sum)

    return triton, approx_scores_kernel, gathered_attention_kernel


def _splits_for(device: torch.device, batch_heads: int, top_k: int, block_t: int) -> int:
    """Enough splits to give a GPU ~2 programs per SM, never a split without a full block."""
    if interpreting():
        return min(2, max(1, top_k // block_t))  # still exercises the merge
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(-(-2 * sms // batch_heads), top_k // block_t))


def approximate_scores(q, label_cache, channels, seq_lens) -> torch.Tensor:
    """Triton step 1: ``[B, H, S]`` fp32 label-cache scores."""
    triton, approx_kernel, _ = _kernels()
    batch, heads, _ = q.shape
    _, kv_heads, seq, r = label_cache.shape
    if label_cache.stride(3) != 1 or q.stride(2) != 1:
        raise ValueError("label_cache and q need contiguous last dimensions")
    scores = torch.empty((batch, heads, seq), device=q.device, dtype=torch.float32)
    block_s = 64 if interpreting() else 256
    approx_kernel[(batch * heads, triton.cdiv(seq, block_s))](
        q,
        label_cache,
        channels.to(torch.int32).contiguous(),
        seq_lens,
        scores,
        heads,
        seq,
        r,
        heads // kv_heads,
        q.stride(0),
        q.stride(1),
        label_cache.stride(0),
        label_cache.stride(1),
        label_cache.stride(2),
        BLOCK_S=block_s,
        BLOCK_R=triton.next_power_of_2(r),
    )
    return scores


def sparse_attention(q, k_cache, v_cache, indices, seq_lens, sm_scale) -> torch.Tensor:
    """Triton step 3: attention over the selected tokens, merged across splits."""
    triton, _, gather_kernel = _kernels()
    batch, heads, dim = q.shape
    top_k = indices.shape[2]
    if k_cache.stride(3) != 1 or v_cache.stride(3) != 1 or q.stride(2) != 1:
        raise ValueError("q, k_cache and v_cache need contiguous last dimensions")
    indices = indices.to(torch.int32).contiguous()
    block_t = 16 if interpreting() else 64
    splits = _splits_for(q.device, batch * heads, top_k, block_t)
    tokens_per_split = triton.cdiv(triton.cdiv(top_k, splits), block_t) * block_t
    splits = triton.cdiv(top_k, tokens_per_split)
    part_out = torch.empty((batch, heads, splits, dim), device=q.device, dtype=torch.float32)
    part_max = torch.empty((batch, heads, splits), device=q.device, dtype=torch.float32)
    part_sum = torch.empty_like(part_max)
    gather_kernel[(batch * heads, splits)](
        q,
        k_cache,
        v_cache,
        indices,
        seq_lens,
        part_out,
        part_max,
        part_sum,
        heads,
        dim,
        top_k,
        heads // k_cache.shape[1],
        tokens_per_split,
        sm_scale,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        BLOCK_T=block_t,
        BLOCK_D=triton.next_power_of_2(dim),
    )
    weight = torch.exp(part_max - part_max.amax(-1, keepdim=True)).nan_to_num(0.0)
    out = (part_out * weight[..., None]).sum(2) / (part_sum * weight).sum(-1, keepdim=True)
    return out.to(q.dtype)


def double_sparsity_decode(
    q, k_cache, v_cache, label_cache, channels, top_k, seq_lens=None, sm_scale=None
) -> torch.Tensor:
    """Triton Double Sparsity decode: ``[B, H, D]`` in q's dtype."""
    seq_lens, k = _checked(q, k_cache, v_cache, label_cache, channels, top_k, seq_lens)
    scores = approximate_scores(q, label_cache, channels.to(q.device), seq_lens)
    indices = scores.topk(k, dim=-1).indices
    return sparse_attention(q, k_cache, v_cache, indices, seq_lens, _scale(q, sm_scale))
