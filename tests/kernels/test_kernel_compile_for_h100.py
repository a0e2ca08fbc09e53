"""The interpreter cannot catch what only the GPU compiler sees (loop-carried types, dot shapes,
layouts). Triton ships its own LLVM and ptxas, so every kernel is compiled here, on the CPU, all
the way to an sm_90 (H100) cubin — in a subprocess, because this test process interprets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import json
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    from accel_kernels import anybit_gemm, block_sparse_attn, double_sparsity, lowbit_gemm

    def signature(kernel, pointers, floats=(), **constexprs):
        sig = {}
        for name in kernel.arg_names:
            if name in constexprs:
                sig[name] = "constexpr"
            elif name.endswith("_ptr"):
                sig[name] = "*" + pointers[name]
            else:
                sig[name] = "fp32" if name in floats else "i32"
        return ASTSource(fn=kernel, signature=sig, constexprs=constexprs)

    gemm_ptrs = lambda act: {"x_ptr": act, "codes_ptr": "u8", "scales_ptr": "fp16",
                             "zeros_ptr": "fp16", "y_ptr": act}
    cases = {
        "lowbit int4 bf16 decode": (lowbit_gemm._kernels()[1], gemm_ptrs("bf16"),
                                    dict(BITS=4, DOT_FP32=False, BLOCK_M=16, BLOCK_N=64, BLOCK_K=128), {}),
        "lowbit int8 fp16 prefill": (lowbit_gemm._kernels()[1], gemm_ptrs("fp16"),
                                     dict(BITS=8, DOT_FP32=False, BLOCK_M=128, BLOCK_N=128, BLOCK_K=64),
                                     dict(num_warps=8, num_stages=3)),
        "anybit 3-bit bf16": (anybit_gemm._kernels()[1], gemm_ptrs("bf16"),
                              dict(BITS=3, DOT_FP32=False, BLOCK_M=16, BLOCK_N=64, BLOCK_K=64), {}),
        "anybit 6-bit fp16": (anybit_gemm._kernels()[1], gemm_ptrs("fp16"),
                              dict(BITS=6, DOT_FP32=False, BLOCK_M=64, BLOCK_N=128, BLOCK_K=64), {}),
        "double sparsity label scores": (
            double_sparsity._kernels()[1],
            {"q_ptr": "bf16", "label_ptr": "bf16", "channels_ptr": "i32", "seq_lens_ptr": "i32",
             "out_ptr": "fp32"}, dict(BLOCK_S=256, BLOCK_R=16), {}),
        "double sparsity gathered attention": (
            double_sparsity._kernels()[2],
            {"q_ptr": "bf16", "k_ptr": "bf16", "v_ptr": "bf16", "idx_ptr": "i32", "seq_lens_ptr": "i32",
             "part_out_ptr": "fp32", "part_max_ptr": "fp32", "part_sum_ptr": "fp32"},
            dict(BLOCK_T=64, BLOCK_D=128), {}),
        "block-sparse attention 128 bf16": (
            block_sparse_attn._kernels()[1],
            {"q_ptr": "bf16", "k_ptr": "bf16", "v_ptr": "bf16", "out_ptr": "bf16", "ids_ptr": "i32",
             "counts_ptr": "i32"}, dict(BLOCK=128, BLOCK_D=128, DOT_FP32=False),
            dict(num_warps=8, num_stages=3)),
        "block-sparse attention 64 fp16": (
            block_sparse_attn._kernels()[1],
            {"q_ptr": "fp16", "k_ptr": "fp16", "v_ptr": "fp16", "out_ptr": "fp16", "ids_ptr": "i32",
             "counts_ptr": "i32"}, dict(BLOCK=64, BLOCK_D=64, DOT_FP32=False), {}),
    }
    report = {}
    for name, (kernel, pointers, constexprs, options) in cases.items():
        source = signature(kernel, pointers, floats=("sm_scale",), **constexprs)
        compiled = compile(source, target=GPUTarget("cuda", 90, 32), options=options)
        report[name] = {"cubin_bytes": len(compiled.asm["cubin"]), "shared": compiled.metadata.shared,
                        "mma": "mma" in compiled.asm["ptx"]}
    print(json.dumps(report))
""")


@pytest.mark.slow  # ~30 s: eight full compilations through LLVM and ptxas
def test_every_kernel_compiles_to_an_h100_cubin():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report) == 8
    for name, compiled in report.items():
        assert compiled["cubin_bytes"] > 1000, name
        assert compiled["shared"] <= 227 * 1024, name  # an H100 block's shared-memory limit
    # the matmuls and the flash-attention tiles run on tensor cores, not scalar FMAs
    for name in ("lowbit int4 bf16 decode", "anybit 3-bit bf16", "block-sparse attention 128 bf16"):
        assert report[name]["mma"], name
