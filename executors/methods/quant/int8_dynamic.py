"""`quant.int8_dynamic`: W8A8 dynamic int8 linear layers — the post-training core of EdgeQAT.

EdgeQAT (arXiv 2402.10787) quantizes weights and activations of a small LLM's linear layers to
8 bits and then recovers quality with quantization-aware training. This method is its PTQ
starting point: int8 weights (per output channel), activations quantized on the fly per
batch, int8 GEMMs from torch's x86/fbgemm kernels. The LM head stays fp32 unless asked for,
as the head feeds the sampler directly.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from executors.families import default_runner
from executors.registry import Method, MethodConfig, register_method

# Above this `activation_outlier_ratio` (a model descriptor, executors.activations) the median
# token keeps fewer than 127/16 ≈ 8 levels (3 bits) of a per-tensor int8 grid. The zoo's byte LMs
# measure 2–5 and lose ≤ 1 % perplexity under plain int8; SmolLM2-135M measures ≈ 1 600 and loses
# 225 % (docs/low-bit.md).
PER_TENSOR_OUTLIER_BOUND = 16.0


def int8_engine_missing() -> str | None:
    engines = torch.backends.quantized.supported_engines
    if "x86" not in engines and "fbgemm" not in engines:
        return "no x86/fbgemm quantized engine in this torch build"
    return None


@dataclass(frozen=True)
class Int8DynamicConfig(MethodConfig):
    per_channel: bool = True
    include_head: bool = False
    version: int = 1


def _untie(model: nn.Module, names: set[str]) -> None:
    """A linear to be packed whose weight another module shares (a head tied to the embedding) gets
    its own copy first: packing replaces the weight, and the sharer must keep its float one."""
    sharers = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
    for name in names:
        linear = model.get_submodule(name)
        if isinstance(linear, nn.Linear) and sharers[id(linear.weight)] > 1:
            linear.weight = nn.Parameter(linear.weight.detach().clone())


def quantize_int8_dynamic(model: nn.Module, config: Int8DynamicConfig) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    quantized = copy.deepcopy(model)
    qconfig = per_channel_dynamic_qconfig if config.per_channel else default_dynamic_qconfig
    names = {
        name
        for name, module in quantized.named_modules()
        if isinstance(module, nn.Linear) and (config.include_head or name != "output")
    }
    _untie(quantized, names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager-mode quantization warns it is deprecated; it still works
        return quantize_dynamic(quantized, dict.fromkeys(names, qconfig), dtype=torch.qint8)


@register_method(
    "quant.int8_dynamic",
    Int8DynamicConfig,
    category="quantization",
    families=("lm", "longctx", "encoder", "vision"),
    changes=("weights", "weight_bytes", "outputs"),
    paper="EdgeQAT: Entropy and Distribution Guided Quantization-Aware Training for the "
    "Acceleration of Lightweight LLMs on the Edge (PTQ W8A8 core)",
    arxiv="2402.10787",
    catalogue_row=6,
    lossless=False,
)
class Int8Dynamic(Method):
    order = 10  # a weight transform: before compilation and decoding strategies
    composes_with = frozenset({"baseline", "sys.compile", "lm.spec.swift", "lm.spec.medusa", "lm.parallel.jacobi"})
    requirements = {"devices": ["cpu"]}

    def supports(self, bundle, device):
        if "linear_layers" not in bundle.capabilities:
            return "quantizes nn.Linear layers; this model declares none"
        if device.type != "cpu":
            return "torch's dynamic int8 linear kernels run on CPU only"
        ratio = bundle.spec.extra.get("activation_outlier_ratio")
        if ratio is not None and ratio > PER_TENSOR_OUTLIER_BOUND:
            return (
                f"one token's linear-layer inputs reach {ratio:,.0f}× the median token's on calibration text, so "
                f"per-tensor activation scales leave the other tokens ≤ {127 / ratio:.1f} of 127 levels; "
                "use quant.int8_outlier (per-token scales)"
            )
        return int8_engine_missing()

    def apply(self, bundle, config):
        return default_runner(bundle, quantize_int8_dynamic(bundle.model, config))
