"""The GPU benchmark cannot run here; its CPU self-check and its refusal can."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "kernels_gpu.py"


def _run(*args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # --check sets it itself
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )


def test_check_mode_runs_every_kernel_group_and_reports_json(tmp_path):
    out = tmp_path / "check.json"
    result = _run("--check", "--out", str(out), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report == json.loads(result.stdout)
    assert report["mode"] == "interpreter-check" and report["failed_cases"] == 0
    assert {r["kernel"] for r in report["results"]} == {
        "lowbit_gemm",
        "anybit_gemm",
        "double_sparsity_decode",
        "block_sparse_attention",
    }
    for case in report["results"]:
        assert case["max_rel_err"] < 2e-2, case  # bf16 against the fp32 references
        assert case["time_us"] > 0 and case["baseline_us"] > 0 and case["bytes"] > 0
        assert case["bandwidth_fraction"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_it_refuses_with_a_reason(tmp_path):
    out = tmp_path / "gpu.json"
    result = _run("--out", str(out), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "CUDA" in json.loads(out.read_text())["skipped"]
    assert "refusing" in result.stderr


def test_unknown_kernel_group_is_a_usage_error(tmp_path):
    result = _run("--check", "--only", "lowbit,warp_drive", tmp_path=tmp_path)
    assert result.returncode == 2 and "warp_drive" in result.stderr
