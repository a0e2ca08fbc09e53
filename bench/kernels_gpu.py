"""GPU benchmark of the kernels in ``accel_kernels/``; prints (and with --out writes) one JSON document.

    python bench/kernels_gpu.py --out kernels_h100.json          # needs CUDA + triton
    python bench/kernels_gpu.py --only lowbit,anybit --out a.json  # a part, for short GPU leases
    python bench/kernels_gpu.py --check                           # CPU self-check, interpreter

Per case: the kernel's median time, the PyTorch equivalent's (bf16 ``F.linear`` with the dense
weight; ``F.scaled_dot_product_attention`` over the full KV / all blocks) and the speed-up;
the bytes the kernel must move, its achieved bandwidth and that as a fraction of this device's
measured copy bandwidth; and the kernel's error against its PyTorch reference. Without CUDA the
script refuses: it prints {"skipped": reason} and exits with status 2. ``--check`` runs every
case on tiny shapes under TRITON_INTERPRET=1 so the script itself is known to work; its times
are interpreter times and mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

KERNEL_GROUPS = ("lowbit", "anybit", "double_sparsity", "block_sparse")
# Realistic shapes: 4096- and 8192-wide layers at decode batch 1..16; KV 4k..64k for decode
# attention (Llama-2-7B heads as in the paper, and 8 KV heads with GQA); DiT-like attention.
GPU_SHAPES = {
    "lowbit": {"nk": [(4096, 4096), (8192, 8192)], "m": [1, 4, 16], "bits": [4, 8], "group": 128},
    "anybit": {"nk": [(4096, 4096), (8192, 8192)], "m": [1, 16], "bits": [2, 3, 5, 6], "group": 128},
    "double_sparsity": {
        "bhk": [(1, 32, 32), (8, 32, 8), (16, 32, 8)],
        "seq": [4096, 16384, 65536],
        "dim": 128,
        "r": 16,
        "keep": 1 / 16,
    },
    "block_sparse": {
        "bh": (1, 24),
        "seq": [4096, 16384, 65536],
        "dim": 64,
        "block": 128,
        "density": [0.1, 0.25, 0.5, 1.0],
    },
}
CHECK_SHAPES = {
    "lowbit": {"nk": [(96, 70)], "m": [1, 5], "bits": [4, 8], "group": 32},
    "anybit": {"nk": [(96, 70)], "m": [3], "bits": [3, 6], "group": 32},
    "double_sparsity": {"bhk": [(2, 4, 2)], "seq": [150], "dim": 32, "r": 8, "keep": 1 / 4},
    "block_sparse": {"bh": (1, 2), "seq": [70], "dim": 32, "block": 16, "density": [0.5, 1.0]},
}


def timer(device: str):
    """Median milliseconds of a callable: CUDA events via triton's do_bench, or perf_counter."""
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: do_bench(fn, warmup=25, rep=100, return_mode="median")

    def cpu_time(fn):  # only the --check mode times on the CPU: one warm-up, one timed run
        fn()
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    return cpu_time


def copy_bandwidth_gbs(device: str, measure) -> float:
    nbytes = (1 << 30) if device == "cuda" else (8 << 20)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / (measure(partial(dst.copy_, src)) * 1e-3) / 1e9  # read + write


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.float().abs().max().clamp_min(1e-6)
    return float((actual.float() - expected.float()).abs().max() / scale)


def significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def figures(ms: float, baseline_ms: float, nbytes: int, copy_gbs: float, **extra) -> dict:
    gbs = nbytes / (ms * 1e-3) / 1e9
    return {
        "time_us": significant(ms * 1e3),
        "baseline_us": significant(baseline_ms * 1e3),
        "speedup": significant(baseline_ms / ms),
        "bytes": nbytes,
        "bandwidth_gbs": significant(gbs),
        "bandwidth_fraction": significant(gbs / copy_gbs),
        **extra,
    }


def bench_gemm(group: str, shapes: dict, device: str, dtype, measure, copy_gbs: float):
    from accel_kernels.anybit_gemm import anybit_matmul
    from accel_kernels.lowbit_gemm import lowbit_matmul, lowbit_matmul_reference
    from accel_kernels.quant_pack import quantize_weight

    kernel = lowbit_matmul if group == "lowbit" else anybit_matmul
    layout = "stream" if group == "lowbit" else "planes"
    for n, k in shapes["nk"]:
        weight = torch.randn(n, k, device=device) / math.sqrt(k)
        dense = weight.to(dtype)
        for bits in shapes["bits"]:
            pw = quantize_weight(weight, bits, shapes["group"], layout=layout)
            for m in shapes["m"]:
                case = {
                    "kernel": f"{group}_gemm",
                    "m": m,
                    "n": n,
                    "k": k,
                    "bits": bits,
                    "group_size": shapes["group"],
                    "dtype": str(dtype).removeprefix("torch."),
                    "baseline": "F.linear with the dense weight in the same dtype",
                }
                try:
                    x = torch.randn(m, k, device=device).to(dtype)
                    error = relative_error(kernel(x, pw), lowbit_matmul_reference(x, pw))
                    nbytes = pw.nbytes() + x.numel() * x.element_size() + m * n * x.element_size()
                    yield {
                        **case,
                        **figures(
                            measure(partial(kernel, x, pw)),
                            measure(partial(F.linear, x, dense)),
                            nbytes,
                            copy_gbs,
                            max_rel_err=error,
                            baseline_bytes=dense.numel() * dense.element_size(),
                        ),
                    }
                except Exception as exc:  # one failing case must not lose the others' figures
                    yield {**case, "error": f"{type(exc).__name__}: {exc}"}


def bench_double_sparsity(shapes: dict, device: str, dtype, measure, copy_gbs: float):
    from accel_kernels import double_sparsity as ds

    dim, r = shapes["dim"], shapes["r"]
    for batch, heads, kv_heads in shapes["bhk"]:
        for seq in shapes["seq"]:
            top_k = max(1, int(seq * shapes["keep"]))
            case = {
                "kernel": "double_sparsity_decode",
                "batch": batch,
                "heads": heads,
                "kv_heads": kv_heads,
                "kv_len": seq,
                "dim": dim,
                "label_channels": r,
                "top_k": top_k,
                "dtype": str(dtype).removeprefix("torch."),
                "baseline": "F.scaled_dot_product_attention over the full KV (enable_gqa)",
            }
            try:
                q = torch.randn(batch, heads, dim, device=device, dtype=dtype)
                k_cache = torch.randn(batch, kv_heads, seq, dim, device=device, dtype=dtype)
                v_cache = torch.randn_like(k_cache)
                # calibrated on this batch's first query and 64 keys: the scores' speed, not
                # their quality, is measured here
                channels = ds.calibrate_channels(q[None, 0].float(), k_cache[0, :, :64].transpose(0, 1).float(), r)
                labels = ds.build_label_cache(k_cache, channels)
                seq_lens = torch.full((batch,), seq, device=device, dtype=torch.int32)
                args = (q, k_cache, v_cache, labels, channels, top_k)
                one = (q[:1], k_cache[:1], v_cache[:1], labels[:1], channels, top_k)  # bounded reference
                error = relative_error(ds.double_sparsity_decode(*one), ds.double_sparsity_decode_reference(*one))
                scores = ds.approximate_scores(q, labels, channels, seq_lens)
                indices = scores.topk(top_k, dim=-1).indices
                scale = 1 / math.sqrt(dim)
                parts_ms = {
                    "label_scores_us": measure(partial(ds.approximate_scores, q, labels, channels, seq_lens)),
                    "topk_us": measure(partial(scores.topk, top_k, dim=-1)),
                    "gathered_attention_us": measure(
                        partial(ds.sparse_attention, q, k_cache, v_cache, indices, seq_lens, scale)
                    ),
                }
                item = q.element_size()
                nbytes = (
                    labels.numel() * item
                    + 2 * batch * heads * top_k * dim * item
                    + 2 * scores.numel() * 4
                    + 2 * indices.numel() * 4
                    + 2 * q.numel() * item
                )
                baseline = measure(
                    partial(
                        F.scaled_dot_product_attention, q[:, :, None], k_cache, v_cache, enable_gqa=heads != kv_heads
                    )
                )
                yield {
                    **case,
                    **figures(
                        measure(partial(ds.double_sparsity_decode, *args)),
                        baseline,
                        nbytes,
                        copy_gbs,
                        max_rel_err=error,
                        baseline_bytes=2 * k_cache.numel() * item,
                    ),
                    **{name: significant(ms * 1e3) for name, ms in parts_ms.items()},
                }
            except Exception as exc:
                yield {**case, "error": f"{type(exc).__name__}: {exc}"}


def bench_block_sparse(shapes: dict, device: str, dtype, measure, copy_gbs: float):
    from accel_kernels import block_sparse_attn as bsa

    (batch, heads), dim, block = shapes["bh"], shapes["dim"], shapes["block"]
    generator = torch.Generator(device=device).manual_seed(0)
    for seq in shapes["seq"]:
        q, k, v = (torch.randn(batch, heads, seq, dim, device=device, dtype=dtype) for _ in range(3))
        blocks = -(-seq // block)
        baseline = measure(partial(F.scaled_dot_product_attention, q, k, v))
        for density in shapes["density"]:
            case = {
                "kernel": "block_sparse_attention",
                "batch": batch,
                "heads": heads,
                "seq": seq,
                "dim": dim,
                "block": block,
                "target_density": density,
                "dtype": str(dtype).removeprefix("torch."),
                "baseline": "F.scaled_dot_product_attention, dense",
            }
            try:
                mask = torch.rand(batch, heads, blocks, blocks, device=device, generator=generator) < density
                mask[..., 0] = True  # every query block keeps at least one key block
                layout = bsa.block_layout(mask, block, batch, heads)
                rows = min(seq, 2 * block)  # the reference is dense: check the first query blocks
                head = bsa.block_layout(mask[:, :, : -(-rows // block)], block, batch, heads)
                first = (q[:, :, :rows], k, v, head, block)
                error = relative_error(bsa.block_sparse_attention(*first), bsa.block_sparse_attention_reference(*first))
                kept = int(mask.sum())
                item = q.element_size()
                nbytes = 2 * q.numel() * item + kept * 2 * block * dim * item
                ms = measure(partial(bsa.block_sparse_attention, q, k, v, layout, block))
                tflop = 4 * kept * block * block * dim / 1e12  # two matmuls per kept tile
                yield {
                    **case,
                    **figures(
                        ms,
                        baseline,
                        nbytes,
                        copy_gbs,
                        max_rel_err=error,
                        density=significant(layout.density),
                        kept_tflop=significant(tflop),
                        achieved_tflops=significant(tflop / (ms * 1e-3)),
                    ),
                }
            except Exception as exc:
                yield {**case, "error": f"{type(exc).__name__}: {exc}"}


def refusal() -> str | None:
    if not torch.cuda.is_available():
        return "CUDA is not available: this benchmark measures GPU kernels (use --check on a CPU)"
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton is not importable ({exc})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--check", action="store_true", help="tiny CPU self-check under TRITON_INTERPRET=1")
    parser.add_argument("--only", default=",".join(KERNEL_GROUPS), help="comma-separated kernel groups")
    args = parser.parse_args(argv)
    groups = [g for g in args.only.split(",") if g]
    unknown = sorted(set(groups) - set(KERNEL_GROUPS))
    if unknown:
        parser.error(f"unknown kernel groups {unknown}; choose from {KERNEL_GROUPS}")

    if args.check:
        os.environ["TRITON_INTERPRET"] = "1"  # the kernels are defined on first use, after this
        device, shapes = "cpu", CHECK_SHAPES
    else:
        reason = refusal()
        if reason:
            print(f"kernels_gpu: refusing to run: {reason}", file=sys.stderr)
            emit({"skipped": reason}, args.out)
            return 2
        device, shapes = "cuda", GPU_SHAPES
    torch.manual_seed(0)
    measure = timer(device)
    copy_gbs = copy_bandwidth_gbs(device, measure)
    dtype = torch.bfloat16
    results = []
    for group in groups:
        if group in ("lowbit", "anybit"):
            cases = bench_gemm(group, shapes[group], device, dtype, measure, copy_gbs)
        elif group == "double_sparsity":
            cases = bench_double_sparsity(shapes[group], device, dtype, measure, copy_gbs)
        else:
            cases = bench_block_sparse(shapes[group], device, dtype, measure, copy_gbs)
        for result in cases:
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)  # progress on long GPU runs
    import triton

    report = {
        "mode": "interpreter-check" if args.check else "gpu",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "copy_bandwidth_gbs": significant(copy_gbs),
        "results": results,
        "failed_cases": sum("error" in r for r in results),
    }
    emit(report, args.out)
    return 1 if report["failed_cases"] else 0


def emit(report: dict, out: Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
