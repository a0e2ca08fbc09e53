"""Arbitrary-bit (2..8) weight-only matmul in ABQ-LLM's bit-plane formulation.

ABQ-LLM (arXiv 2408.08554) writes a b-bit code as ``q = sum_i 2**i * P_i`` with binary planes
``P_i`` and multiplies plane by plane, so any width reuses the same binary matmul. With group
scales ``s`` and zero points ``z`` (same storage as :mod:`accel_kernels.quant_pack`):

    y[m, n] = sum_g s[n, g] * ( sum_i 2**i * (x_g @ P_i,g.T)[m, n]  -  z[n, g] * sum_k x_g[m, k] )

so the zero point costs one row sum of x per group instead of a subtraction per weight. The
weight is stored in the ``"planes"`` layout of :mod:`accel_kernels.quant_pack` (convert once with
``to_layout(pw, "planes")``): each plane is a 1-bit stream, so a K step loads
``BLOCK_K / 8`` whole bytes per plane and row (vectorised loads for any width) and spreads them
into 0/1 values with broadcast shifts; 3-, 5-, 6- and 7-bit weights take exactly ``bits/8``
bytes. The kernel runs one ``tl.dot`` per plane on the fp tensor cores (activations stay
fp16/bf16: W2..8 A16); at decode sizes the weight read, not the extra dots, bounds the time.
Binary tensor-core (b1 MMA) paths are not used.
"""

from __future__ import annotations

import functools

import torch

from accel_kernels.lowbit_gemm import (
    check_matmul_args,
    gemm_autotune_configs,
    launch_gemm,
    prune_configs_for_groups,
)
from accel_kernels.quant_pack import PackedWeight, packed_row_bytes, unpack_bit_planes


def anybit_matmul_reference(x: torch.Tensor, pw: PackedWeight) -> torch.Tensor:
    """The bit-plane formulation in PyTorch (fp32) on a ``"planes"`` weight, in x's dtype."""
    _check_planes(pw)
    M, K = x.shape
    gs, groups = pw.group_size, pw.groups
    pad = groups * gs - K
    xg = torch.nn.functional.pad(x.float(), (0, pad)).reshape(M, groups, gs)
    codes = torch.nn.functional.pad(unpack_bit_planes(pw.packed, pw.bits, K), (0, pad))
    codes = codes.reshape(pw.out_features, groups, gs)
    plane_sum = torch.zeros(M, pw.out_features, groups, device=x.device)
    for i in range(pw.bits):
        plane = ((codes >> i) & 1).float()
        plane_sum += (2**i) * torch.einsum("mgk,ngk->mng", xg, plane)
    centred = plane_sum - pw.zeros.float()[None] * xg.sum(-1)[:, None, :]
    return (centred * pw.scales.float()[None]).sum(-1).to(x.dtype)


def _check_planes(pw: PackedWeight) -> None:
    if pw.layout != "planes":
        raise ValueError("the bit-plane kernel needs to_layout(pw, 'planes'), done once at load time")


@functools.cache
def _kernels():
    """Defines the Triton functions on first use (importing this module needs no triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def anybit_matmul_kernel(
        x_ptr,
        codes_ptr,
        scales_ptr,
        zeros_ptr,
        y_ptr,
        M,
        N,
        K,
        row_bytes,
        plane_bytes,
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
        offs_byte = tl.arange(0, BLOCK_K // 8)
        bit_shifts = tl.arange(0, 8)
        in_m = offs_m < M
        in_n = offs_n < N
        row_base = codes_ptr + offs_n[None, :] * row_bytes
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + offs_k
            in_k = k < K
            x = tl.load(
                x_ptr + offs_m[:, None] * stride_xm + k[None, :] * stride_xk,
                mask=in_m[:, None] & in_k[None, :],
                other=0.0,
            )
            if DOT_FP32:
                x = x.to(tl.float32)
            x_sum = tl.sum(x.to(tl.float32), axis=1)
            byte = k0 // 8 + offs_byte
            byte_mask = (byte < plane_bytes)[:, None] & in_n[None, :]
            planes = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for i in tl.static_range(BITS):
                packed = tl.load(row_base + i * plane_bytes + byte[:, None], mask=byte_mask, other=0)
                plane = (packed.to(tl.int32)[:, None, :] >> bit_shifts[None, :, None]) & 1
                plane = tl.reshape(plane, (BLOCK_K, BLOCK_N))  # 0/1 values, row k0 + 8*j + bit
                planes += tl.dot(x, plane.to(x.dtype)) * (1 << i)
            group = k0 // group_size
            scale = tl.load(scales_ptr + offs_n * groups + group, mask=in_n, other=0.0).to(tl.float32)
            zero = tl.load(zeros_ptr + offs_n * groups + group, mask=in_n, other=0.0).to(tl.float32)
            acc += (planes - x_sum[:, None] * zero[None, :]) * scale[None, :]
        tl.store(
            y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
            acc.to(y_ptr.dtype.element_ty),
            mask=in_m[:, None] & in_n[None, :],
        )

    tuned = triton.autotune(
        configs=gemm_autotune_configs(),
        key=["M", "N", "K", "BITS"],
        prune_configs_by={"early_config_prune": prune_configs_for_groups},
    )(anybit_matmul_kernel)
    return triton, anybit_matmul_kernel, tuned


def anybit_matmul(x: torch.Tensor, pw: PackedWeight) -> torch.Tensor:
    """Triton ``x[M, K] @ W.T`` for a 2..8-bit ``"planes"`` :class:`PackedWeight`; ``[M, N]``."""
    check_matmul_args(x, pw)
    _check_planes(pw)
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
        packed_row_bytes(K, 1),
        pw.group_size,
        pw.groups,
        x.stride(0),
        x.stride(1),
        y.stride(0),
        y.stride(1),
    )
    launch_gemm(triton, kernel, tuned, args, x, pw)
    return y
