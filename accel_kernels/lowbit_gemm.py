"""Weight-only low-bit GEMM/GEMV: ``y = x @ W.T`` with W stored as INT4/INT8 (or INT2) codes.

Formulation: each program owns a ``[BLOCK_M, BLOCK_N]`` tile of y and walks K in
``BLOCK_K`` steps. A K step lies inside one quantisation group (the wrapper makes ``BLOCK_K``
divide ``group_size``), so the zero point is subtracted from the codes before the dot and the
group scale multiplies the dot's result — one multiply per output element per step instead of
one per weight. The weight tile goes from packed bytes to ``q - zero`` in registers and never
exists in memory as floats. Accumulation is fp32; the output has x's dtype.

Decode (M = 1..16) and prefill (large M) use the same kernel; autotuning is keyed on
``(M, N, K)`` and the configs whose ``BLOCK_K`` straddles a group are pruned first.
"""

from __future__ import annotations

import functools
import os

import torch

from accel_kernels.quant_pack import PackedWeight, dequantize_weight

ALIGNED_BITS = (2, 4, 8)  # widths whose codes never straddle a byte


def lowbit_matmul_reference(x: torch.Tensor, pw: PackedWeight) -> torch.Tensor:
    """``x[M, K] @ dequantize(pw).T`` in fp32, returned in x's dtype."""
    return (x.float() @ dequantize_weight(pw).to(x.device).T).to(x.dtype)


def interpreting() -> bool:
    """True when Triton runs its CPU interpreter (correctness tests), not compiled kernels."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def block_k_for(group_size: int, groups: int, preferred: int) -> int:
    """The largest power of two <= preferred (and >= 16) whose K steps never straddle a group."""
    if groups == 1:
        return preferred
    block = preferred
    while block >= 16 and group_size % block:
        block //= 2
    if block < 16:
        raise ValueError(f"group_size {group_size} is not a multiple of 16, which tl.dot needs")
    return block


def prune_configs_for_groups(configs, named_args, **kwargs):
    """Drop configs whose K step straddles a group, and row tiles far from M (decode vs prefill)."""
    group_size, groups, m = named_args["group_size"], named_args["groups"], named_args["M"]
    kept = [
        c
        for c in configs
        if (groups == 1 or group_size % c.kwargs["BLOCK_K"] == 0) and (c.kwargs["BLOCK_M"] == 16) == (m <= 16)
    ]
    if kept:
        return kept
    import triton  # small groups (16, 32): one config whose K step fits the group

    return [
        triton.Config(
            {"BLOCK_M": 16 if m <= 16 else 64, "BLOCK_N": 64, "BLOCK_K": block_k_for(group_size, groups, 64)},
            num_warps=4,
            num_stages=3,
        )
    ]


def gemm_autotune_configs():
    """A short list on purpose: each config is one compilation per bit width (seconds each)."""
    import triton

    decode = [
        triton.Config({"BLOCK_M": 16, "BLOCK_N": block_n, "BLOCK_K": block_k}, num_warps=4, num_stages=stages)
        for block_n in (32, 64, 128)
        for block_k in (64, 128)
        for stages in (3, 4)
    ]
    prefill = [
        triton.Config({"BLOCK_M": block_m, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=warps, num_stages=3)
        for block_m in (64, 128)
        for warps in (4, 8)
    ]
    return decode + prefill


@functools.cache
def _kernels():
    """Defines the Triton functions on first use (importing this module needs no triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def lowbit_matmul_kernel(
        x_ptr,
        codes_ptr,
        scales_ptr,
        zeros_ptr,
        y_ptr,
        M,
        N,
        K,
        row_bytes,
        group_size,
        groups,
        stride_xm,
        stride_xk,
        stride_ym,
        stride_yn,
        BITS: tl.constexpr,
        DOT_FP32: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        in_m = offs_m < M
        in_n = offs_n < N
        codes_per_byte: tl.constexpr = 8 // BITS
        code_mask: tl.constexpr = (1 << BITS) - 1
        # Load whole bytes ([BLOCK_K / codes_per_byte, BLOCK_N], contiguous along K, so the loads
        # vectorise) and spread each byte's codes along a new middle axis with broadcast shifts.
        offs_byte = tl.arange(0, BLOCK_K // codes_per_byte)
        shifts = tl.arange(0, codes_per_byte) * BITS
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + offs_k
            in_k = k < K
            x = tl.load(
                x_ptr + offs_m[:, None] * stride_xm + k[None, :] * stride_xk,
                mask=in_m[:, None] & in_k[None, :],
                other=0.0,
            )
            byte = k0 // codes_per_byte + offs_byte
            packed = tl.load(
                codes_ptr + offs_n[None, :] * row_bytes + byte[:, None],
                mask=(byte < row_bytes)[:, None] & in_n[None, :],
                other=0,
            )
            codes = (packed.to(tl.int32)[:, None, :] >> shifts[None, :, None]) & code_mask
            codes = tl.reshape(codes, (BLOCK_K, BLOCK_N))  # row k0 + j*codes_per_byte + i
            group = k0 // group_size
            scale = tl.load(scales_ptr + offs_n * groups + group, mask=in_n, other=0.0).to(tl.float32)
            zero = tl.load(zeros_ptr + offs_n * groups + group, mask=in_n, other=0.0).to(tl.float32)
            centred = codes.to(tl.float32) - zero[None, :]  # small integers: exact in fp16/bf16
            if DOT_FP32:
                part = tl.dot(x.to(tl.float32), centred)
            else:
                part = tl.dot(x, centred.to(x.dtype))
            acc += part * scale[None, :]
        tl.store(
            y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
            acc.to(y_ptr.dtype.element_ty),
            mask=in_m[:, None] & in_n[None, :],
        )

    tuned = triton.autotune(
        configs=gemm_autotune_configs(),
        key=["M", "N", "K", "BITS"],
        prune_configs_by={"early_config_prune": prune_configs_for_groups},
    )(lowbit_matmul_kernel)
    return triton, lowbit_matmul_kernel, tuned


def check_matmul_args(x: torch.Tensor, pw: PackedWeight) -> None:
    if x.dim() != 2 or x.shape[1] != pw.in_features:
        raise ValueError(f"x must be [M, {pw.in_features}], got {tuple(x.shape)}")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"x must be fp16, bf16 or fp32, got {x.dtype}")
    if pw.packed.device != x.device:
        raise ValueError(f"weight on {pw.packed.device}, x on {x.device}")
    if not (pw.packed.is_contiguous() and pw.scales.is_contiguous() and pw.zeros.is_contiguous()):
        raise ValueError("packed codes, scales and zeros must be contiguous")


def lowbit_matmul(x: torch.Tensor, pw: PackedWeight) -> torch.Tensor:
    """Triton ``x[M, K] @ W.T`` for a 2-, 4- or 8-bit :class:`PackedWeight`; returns ``[M, N]``."""
    check_matmul_args(x, pw)
    if pw.bits not in ALIGNED_BITS or pw.layout != "stream":
        raise ValueError(f"{pw.bits}-bit {pw.layout} codes: use accel_kernels.anybit_gemm (bit planes)")
    triton, kernel, tuned = _kernels()
    M, K = x.shape
    y = torch.empty((M, pw.out_features), device=x.device, dtype=x.dtype)
    args = (
        x,
        pw.packed,
        pw.scales,
        pw.zeros,
        y,
        M,
        pw.out_features,
        K,
        pw.row_bytes,
        pw.group_size,
        pw.groups,
        x.stride(0),
        x.stride(1),
        y.stride(0),
        y.stride(1),
    )
    launch_gemm(triton, kernel, tuned, args, x, pw)
    return y


def launch_gemm(triton, kernel, tuned, args: tuple, x: torch.Tensor, pw: PackedWeight) -> None:
    """Launches a low-bit GEMM kernel: autotuned on a GPU, one small fixed tile when interpreting
    (the interpreter's cost grows with programs; its bf16 dots are wrong, so they run in fp32)."""
    M, N = x.shape[0], pw.out_features
    if interpreting():
        block_n, block_k = 64, block_k_for(pw.group_size, pw.groups, 64)
        programs = (triton.cdiv(N, block_n), triton.cdiv(M, 16))
        kernel[programs](*args, BITS=pw.bits, DOT_FP32=True, BLOCK_M=16, BLOCK_N=block_n, BLOCK_K=block_k)
        return
    block_k_for(pw.group_size, pw.groups, 128)  # raises early on group sizes tl.dot cannot tile

    def grid(meta):
        return triton.cdiv(N, meta["BLOCK_N"]), triton.cdiv(M, meta["BLOCK_M"])

    tuned[grid](*args, BITS=pw.bits, DOT_FP32=x.dtype == torch.float32)
