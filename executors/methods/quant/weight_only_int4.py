"""`quant.weight_only_int4`: group-wise INT4 weight-only quantization (GLM-130B's PTQ INT4).

GLM-130B (arXiv 2210.02414) quantizes only the weights of the transformer's linear layers to
4 bits with symmetric absmax scales, activations stay in floating point (W4A16), and reports
almost no quality loss. Weights are stored packed (two codes per byte, `accel_kernels.quant_pack`
format). On CUDA the matmul runs the Triton low-bit GEMM (`accel_kernels.dispatch.lowbit_linear`);
on CPU each call unpacks the nibbles and dequantizes before an fp32 matmul — correct and
4-bit in memory, but extra work per call, so no speed-up is expected on CPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from accel_kernels.dispatch import backend_for, lowbit_linear
from accel_kernels.quant_pack import PackedWeight, quantize_weight
from executors.families import default_runner
from executors.registry import Method, MethodConfig, register_method, transformer_blocks

ModelT = TypeVar("ModelT", bound=nn.Module)


@dataclass(frozen=True)
class WeightOnlyInt4Config(MethodConfig):
    group_size: int = 128
    symmetric: bool = True
    version: int = 1


class Int4Linear(nn.Module):
    """A linear layer whose weight lives as packed 4-bit codes with per-group scales/zeros."""

    packed: torch.Tensor  # buffers, registered in __init__
    scales: torch.Tensor
    zeros: torch.Tensor

    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None):
        super().__init__()
        self.group_size, self.in_features, self.out_features = (
            packed.group_size,
            packed.in_features,
            packed.out_features,
        )
        self.register_buffer("packed", packed.packed)
        self.register_buffer("scales", packed.scales)
        self.register_buffer("zeros", packed.zeros)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def packed_weight(self) -> PackedWeight:
        return PackedWeight(
            self.packed, self.scales, self.zeros, 4, self.group_size, self.out_features, self.in_features
        )

    def dequantized(self) -> torch.Tensor:
        # Two codes per byte, low nibble first (the kernels' packing): cheap uint8 ops, no bit streams.
        codes = torch.stack((self.packed & 15, self.packed >> 4), dim=-1).reshape(self.out_features, -1)
        codes = codes[:, : self.in_features].float()
        groups = self.scales.shape[1]
        padded = groups * self.group_size
        if padded != self.in_features:
            codes = F.pad(codes, (0, padded - self.in_features))
        grouped = codes.view(self.out_features, groups, self.group_size)
        weight = (grouped - self.zeros.float()[..., None]) * self.scales.float()[..., None]
        return weight.view(self.out_features, padded)[:, : self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return lowbit_linear(x, self.packed_weight(), self.bias)
        return F.linear(x, self.dequantized(), self.bias)


def quantize_int4(model: ModelT, config: WeightOnlyInt4Config) -> ModelT:
    quantized = copy.deepcopy(model)
    for block in transformer_blocks(quantized):  # transformer linears only; embeddings and head stay fp32
        for parent in (block.attention, block.feed_forward):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    packed = quantize_weight(child.weight.detach(), 4, config.group_size, symmetric=config.symmetric)
                    setattr(parent, name, Int4Linear(packed, child.bias))
    return quantized


@register_method(
    "quant.weight_only_int4",
    WeightOnlyInt4Config,
    category="quantization",
    families=("lm", "encoder"),
    changes=("weights", "weight_bytes", "outputs"),
    paper="GLM-130B: An Open Bilingual Pre-trained Model (INT4 weight-only quantization)",
    arxiv="2210.02414",
    catalogue_row=None,
    lossless=False,
)
class WeightOnlyInt4(Method):
    order = 10
    composes_with = frozenset({"baseline", "lm.spec.swift", "lm.spec.medusa", "lm.parallel.jacobi"})

    def supports(self, bundle, device):
        if "linear_layers" not in bundle.capabilities:
            return "quantizes nn.Linear layers; this model declares none"
        config = bundle.model.config
        if config.dim % 2 or config.ffn_dim % 2:
            return "packed INT4 holds two codes per byte, so layer widths must be even"
        return None

    def apply(self, bundle, config):
        backend, reason = backend_for(bundle.model.tok_embeddings.weight.device)
        cpu_path = "nibble unpack + dequantize + fp32 matmul"
        return default_runner(
            bundle,
            quantize_int4(bundle.model, config),
            {"kernel_backend": backend if backend == "triton" else cpu_path, "kernel_backend_reason": reason},
        )
