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
from dataclasses import dataclass

import torch
from torch import nn

from executors.families import default_runner
from executors.families.lm.model import DecoderLM
from executors.registry import Method, MethodConfig, register_method


@dataclass(frozen=True)
class Int8DynamicConfig(MethodConfig):
    per_channel: bool = True
    include_head: bool = False
    version: int = 1


def quantize_int8_dynamic(model: nn.Module, config: Int8DynamicConfig) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    quantized = copy.deepcopy(model)
    if config.include_head and isinstance(quantized, DecoderLM) and quantized.config.tie_embeddings:
        quantized.output.weight = nn.Parameter(quantized.output.weight.detach().clone())  # untie before packing
    qconfig = per_channel_dynamic_qconfig if config.per_channel else default_dynamic_qconfig
    names = {
        name
        for name, module in quantized.named_modules()
        if isinstance(module, nn.Linear) and (config.include_head or name != "output")
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager-mode quantization warns it is deprecated; it still works
        return quantize_dynamic(quantized, dict.fromkeys(names, qconfig), dtype=torch.qint8)


@register_method(
    "quant.int8_dynamic",
    Int8DynamicConfig,
    category="quantization",
    families=("lm", "longctx", "encoder"),
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
        if (
            "x86" not in torch.backends.quantized.supported_engines
            and "fbgemm" not in torch.backends.quantized.supported_engines
        ):
            return "no x86/fbgemm quantized engine in this torch build"
        return None

    def apply(self, bundle, config):
        return default_runner(bundle, quantize_int8_dynamic(bundle.model, config))
