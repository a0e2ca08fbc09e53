"""`sys.compile`: torch.compile (TorchInductor) of the whole model.

PyTorch 2 (Ansel et al., ASPLOS 2024) captures the model's graph with TorchDynamo and
generates fused kernels with TorchInductor (C++/OpenMP on CPU, Triton on GPU). Compilation
happens on the first calls; the harness records that time as setup, never in steady state.
Shapes are compiled dynamically so a growing KV cache does not trigger a recompile per token.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import torch

from executors.families import default_runner
from executors.registry import Method, MethodConfig, register_method

MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class CompileConfig(MethodConfig):
    mode: str = "default"
    dynamic: bool = True
    version: int = 1


@register_method(
    "sys.compile",
    CompileConfig,
    category="system",
    families=("lm", "encoder", "vision"),
    changes=("graph",),
    paper="PyTorch 2: Faster Machine Learning Through Dynamic Python Bytecode "
    "Transformation and Graph Compilation (torch.compile)",
    arxiv=None,
    catalogue_row=12,
    lossless=False,
)
class Compile(Method):
    order = 50  # after weight transforms, before the decoding strategy
    composes_with = frozenset({"baseline", "quant.int8_dynamic"})

    def supports(self, bundle, device):
        if device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
            return "TorchInductor's CPU backend needs a C++ compiler (g++) on the PATH"
        if device.type == "cuda" and importlib_missing("triton"):
            return "TorchInductor's CUDA backend needs triton"
        return None

    def apply(self, bundle, config):
        if config.mode not in MODES:
            raise ValueError(f"sys.compile: mode must be one of {MODES}, not {config.mode!r}")
        from profiles.settings import get_settings

        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(get_settings().cache_dir / "inductor"))
        # Dynamo counts recompiles per code object, and every DecoderLM shares lm.py's forward
        # functions: several models × thread counts (a guarded global) × batch specialisations
        # pass the default limit of 8, after which it silently runs eager.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
        torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 4096)
        compiled = torch.compile(bundle.model, mode=config.mode, dynamic=config.dynamic)
        assert isinstance(compiled, torch.nn.Module), "a compiled module is an OptimizedModule"
        return default_runner(bundle, compiled, {"compile_mode": config.mode})


def importlib_missing(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is None
