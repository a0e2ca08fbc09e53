"""The one entry point executors call: the Triton kernel on CUDA, the PyTorch reference elsewhere.

``backend_for(device)`` names the backend and the reason; executors copy both into the
ProfileRun environment (``environment["kernel_backend"]``, ``environment["kernel_backend_reason"]``)
so a profile always says which code produced its figures. The CPU path never uses Triton's
interpreter: it is a correctness tool, hundreds of times slower than the reference.
"""

from __future__ import annotations

import functools
import logging

import torch

from kernels.quant_pack import PackedWeight

log = logging.getLogger(__name__)

TRITON, REFERENCE = "triton", "torch-reference"
FAST_PATH_BITS = (4, 8)  # the aligned INT4/INT8 kernel; other widths use the arbitrary-bit kernel


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
    version, why_not = _triton_version()
    if version is None:
        return REFERENCE, why_not
    return TRITON, f"CUDA device {torch.cuda.get_device_name(device)} with triton {version}"


def _use_triton(*tensors: torch.Tensor) -> bool:
    backend, reason = backend_for(tensors[0].device)
    log.debug("kernel backend %s: %s", backend, reason)
    return backend == TRITON


def lowbit_linear(x: torch.Tensor, pw: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x[..., K] @ W.T (+ bias)`` for a packed low-bit weight; returns ``[..., N]`` in x's dtype."""
    if x.shape[-1] != pw.in_features:
        raise ValueError(f"x has {x.shape[-1]} features, the weight expects {pw.in_features}")
    x2d = x.reshape(-1, pw.in_features)
    if _use_triton(x):
        if pw.bits in FAST_PATH_BITS:
            from kernels.lowbit_gemm import lowbit_matmul as matmul
        else:
            from kernels.anybit_gemm import anybit_matmul as matmul
        y = matmul(x2d, pw)
    else:
        from kernels.lowbit_gemm import lowbit_matmul_reference

        y = lowbit_matmul_reference(x2d, pw)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.reshape(*x.shape[:-1], pw.out_features)


def double_sparsity_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           label_cache: torch.Tensor, channels: torch.Tensor, top_k: int,
                           seq_lens: torch.Tensor | None = None,
                           sm_scale: float | None = None) -> torch.Tensor:
    """One decode step of Double Sparsity attention; see :mod:`kernels.double_sparsity`."""
    from kernels import double_sparsity

    fn = (double_sparsity.double_sparsity_decode if _use_triton(q)
          else double_sparsity.double_sparsity_decode_reference)
    return fn(q, k_cache, v_cache, label_cache, channels, top_k, seq_lens=seq_lens, sm_scale=sm_scale)


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           block_mask: torch.Tensor, block_size: int,
                           sm_scale: float | None = None) -> torch.Tensor:
    """Attention restricted to the blocks ``block_mask`` keeps; see :mod:`kernels.block_sparse_attn`."""
    from kernels import block_sparse_attn

    fn = (block_sparse_attn.block_sparse_attention if _use_triton(q)
          else block_sparse_attn.block_sparse_attention_reference)
    return fn(q, k, v, block_mask, block_size, sm_scale=sm_scale)
