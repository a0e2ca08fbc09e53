from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

from accel_kernels import block_sparse_attn, dispatch, double_sparsity
from accel_kernels.lowbit_gemm import lowbit_matmul_reference
from accel_kernels.quant_pack import quantize_weight


def test_cpu_uses_the_reference_and_says_why():
    backend, reason = dispatch.backend_for("cpu")
    assert backend == dispatch.REFERENCE and "cpu" in reason
    if not torch.cuda.is_available():
        backend, reason = dispatch.backend_for("cuda")
        assert backend == dispatch.REFERENCE and "CUDA" in reason


def test_lowbit_linear_keeps_leading_dims_and_adds_bias(generator):
    weight = torch.randn(24, 40, generator=generator)
    bias = torch.randn(24, generator=generator)
    pw = quantize_weight(weight, 4, 16)
    x = torch.randn(2, 3, 40, generator=generator)
    y = dispatch.lowbit_linear(x, pw, bias)
    assert y.shape == (2, 3, 24)
    assert torch.allclose(y, lowbit_matmul_reference(x.reshape(6, 40), pw).reshape(2, 3, 24) + bias)
    exact = x @ weight.T + bias  # and int4 stays within a few per cent of the fp32 layer
    assert (y - exact).abs().max() < 0.1 * exact.abs().max()


def test_attention_entry_points_run_the_reference_on_cpu(generator):
    q = torch.randn(1, 2, 16, generator=generator)
    k_cache = torch.randn(1, 2, 40, 16, generator=generator)
    channels = torch.tensor([[0, 5], [1, 7]])
    labels = double_sparsity.build_label_cache(k_cache, channels)
    args = (q, k_cache, k_cache.flip(2), labels, channels, 8)
    assert torch.equal(dispatch.double_sparsity_decode(*args), double_sparsity.double_sparsity_decode_reference(*args))
    qs = torch.randn(1, 2, 40, 16, generator=generator)
    mask = torch.rand(1, 2, 3, 3, generator=generator) < 0.6
    assert torch.equal(
        dispatch.block_sparse_attention(qs, k_cache, k_cache, mask, 16),
        block_sparse_attn.block_sparse_attention_reference(qs, k_cache, k_cache, mask, 16),
    )


def test_cpu_path_needs_no_triton():
    """A CPU-only install has no triton: dispatch must still run every entry point."""
    probe = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None  # any `import triton` now raises ImportError
        import torch
        from accel_kernels import dispatch
        from accel_kernels.quant_pack import quantize_weight
        y = dispatch.lowbit_linear(torch.randn(2, 32), quantize_weight(torch.randn(8, 32), 3, 16))
        assert y.shape == (2, 8)
        q = torch.randn(1, 1, 8, 8)
        out = dispatch.block_sparse_attention(q, q, q, torch.ones(1, 1, 1, 1, dtype=torch.bool), 16)
        assert out.shape == q.shape
        print(dispatch.backend_for("cpu")[0])
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == dispatch.REFERENCE
