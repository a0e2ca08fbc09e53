"""Kernel tests run Triton's CPU interpreter; it must be on before any kernel is defined."""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # noqa: E402 — must precede every kernel definition

import pytest  # noqa: E402
import torch  # noqa: E402

# Largest |kernel - reference| / max|reference| accepted per activation dtype: fp32 allows
# accumulation-order noise; fp16/bf16 allow one or two rounding steps of the final cast.
RELATIVE_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _assert_matches(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert torch.isfinite(actual).all()
    scale = expected.float().abs().max().clamp_min(1e-6)
    error = float((actual.float() - expected.float()).abs().max() / scale)
    assert error <= RELATIVE_TOLERANCE[dtype], f"relative error {error:.2e} for {dtype}"


@pytest.fixture
def assert_matches():
    """``assert_matches(actual, expected, dtype)`` with the tolerance above (a fixture, so test
    modules need not import conftest, whatever pytest's import mode)."""
    return _assert_matches


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
