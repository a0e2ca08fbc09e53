"""`deploy.amp`: automatic mixed precision at inference (the deployment study's AMP step).

The Jetson study (catalogue row 12) runs its classifier under AMP on the GPU. Here the model's
forward runs inside `torch.autocast`: matmuls and convolutions in float16 on CUDA, bfloat16 on
CPU, everything numerically sensitive in float32 as autocast decides; weights stay fp32. On a
CPU without native bf16 (no AVX-512-BF16/AMX: STACK.md measures bf16 matmul ~7× slower than
fp32) this is expected to be slower — a measured fact for the advisor, not a bug.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from executors.families import default_runner
from executors.registry import Method, MethodConfig, register_method


@dataclass(frozen=True)
class AmpConfig(MethodConfig):
    dtype: str = "auto"  # auto: float16 on CUDA, bfloat16 on CPU
    version: int = 1


DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class Autocast(nn.Module):
    def __init__(self, model: nn.Module, dtype: str):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        device = args[0].device.type
        dtype = DTYPES[self.dtype] if self.dtype != "auto" else (torch.float16 if device == "cuda" else torch.bfloat16)
        with torch.autocast(device, dtype=dtype):
            return self.model(*args).float()


@register_method(
    "deploy.amp",
    AmpConfig,
    category="precision",
    families=("vision",),
    changes=("outputs",),
    paper="Deployment recipe of the Jetson wildfire study (AMP): torch.autocast mixed precision",
    catalogue_row=12,
    lossless=False,
)
class Amp(Method):
    order = 70
    composes_with = frozenset({"baseline"})

    def apply(self, bundle, config):
        if config.dtype not in ("auto", *DTYPES):
            raise ValueError(f"deploy.amp: dtype must be auto, float16 or bfloat16, not {config.dtype!r}")
        return default_runner(bundle, Autocast(bundle.model, config.dtype), {"autocast": config.dtype})
