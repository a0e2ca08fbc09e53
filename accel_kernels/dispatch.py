"""The one entry point executors call: the Triton kernel on CUDA, the PyTorch reference elsewhere.

``backend_for(device)`` names the backend and the reason; executors copy both into the
ProfileRun environment (``environment["kernel_backend"]``, ``environment["kernel_backend_reason"]``)
so a profile always says which code produced its figures. The CPU path never uses Triton's
interpreter: it is a correctness tool, hundreds of times slower than the reference.

Low-bit routing on CUDA: a ``"stream"`` weight of 2, 4 or 8 bits goes to the fused-dequant
kernel (:mod:`accel_kernels.lowbit_gemm`); a ``"planes"`` weight of any width to the bit-plane kernel
(:mod:`accel_kernels.anybit_gemm`); a 3/5/6/7-bit ``"stream"`` weight is re-packed per call, with a
warning, because that belongs at load time.
"""

from __future__ import annotations

import functools
import logging

import torch

from accel_kernels.quant_pack import PackedWeight, to_layout

log = logging.getLogger(__name__)

TRITON, REFERENCE = "triton", "torch-reference"


@functools.cache
def _triton_version() -> tuple[str | None, str]:
    try:
        import triton
    except ImportError as exc:  # CPU-only installs do not ship triton (it is the `gpu` extra)
        return None, f"triton is not importable ({exc})"
    return triton.__version__, ""


def backend_for(device: torch.device | str) -> tuple[str, str]:
    """``("triton" | "torch-reference", reason)`` for tensors on ``device``."""
    device = torch.device(device)
    if device.type != "cuda":
        return REFERENCE, f"device is {device.type}: the Triton kernels are used on CUDA only"
    if not torch.cuda.is_available():
        return REFERENCE, "CUDA is not available in this process"
    version, why_not = _triton_version()
    if version is None:
        return REFERENCE, why_not
    return TRITON, f"CUDA device {torch.cuda.get_device_name(device)} with triton {version}"


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


def _use_triton(tensor: torch.Tensor) -> bool:
    backend, reason = backend_for(tensor.device)
    log.debug("kernel backend %s: %s", backend, reason)
    return backend == TRITON


def lowbit_linear(x: torch.Tensor, pw: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x[..., K] @ W.T (+ bias)`` for a packed low-bit weight; returns ``[..., N]`` in x's dtype."""
    if x.shape[-1] != pw.in_features:
        raise ValueError(f"x has {x.shape[-1]} features, the weight expects {pw.in_features}")
    x2d = x.reshape(-1, pw.in_features)
    if _use_triton(x):
        from accel_kernels.anybit_gemm import anybit_matmul
        from accel_kernels.lowbit_gemm import ALIGNED_BITS, lowbit_matmul

        if pw.layout == "stream" and pw.bits in ALIGNED_BITS:
            y = lowbit_matmul(x2d, pw)
        else:
            if pw.layout != "planes":
                _warn_once(
                    f"re-packing a {pw.bits}-bit stream weight into bit planes on every call: "
                    "quantize with layout='planes' (or to_layout once) instead"
                )
                pw = to_layout(pw, "planes")
            y = anybit_matmul(x2d, pw)
    else:
        from accel_kernels.lowbit_gemm import lowbit_matmul_reference

        y = lowbit_matmul_reference(x2d, pw)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.reshape(*x.shape[:-1], pw.out_features)


def double_sparsity_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    label_cache: torch.Tensor,
    channels: torch.Tensor,
    top_k: int,
    seq_lens: torch.Tensor | None = None,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """One decode step of Double Sparsity attention; see :mod:`accel_kernels.double_sparsity`."""
    from accel_kernels import double_sparsity

    fn = double_sparsity.double_sparsity_decode if _use_triton(q) else double_sparsity.double_sparsity_decode_reference
    return fn(q, k_cache, v_cache, label_cache, channels, top_k, seq_lens=seq_lens, sm_scale=sm_scale)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    block_size: int,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """Attention restricted to the blocks ``block_mask`` keeps; see :mod:`accel_kernels.block_sparse_attn`."""
    from accel_kernels import block_sparse_attn

    fn = (
        block_sparse_attn.block_sparse_attention
        if _use_triton(q)
        else block_sparse_attn.block_sparse_attention_reference
    )
    return fn(q, k, v, block_mask, block_size, sm_scale=sm_scale)
