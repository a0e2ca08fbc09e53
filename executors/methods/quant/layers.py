"""Fake-quantised convolution and linear layers, shared by the vision quantisers (Q-HyViT, QFX,
GPUSQ-ViT, the deployment recipe's QAT int8).

`FakeQuant` is a uniform quantiser: symmetric or asymmetric, per tensor or per channel, with a
learnable step (LSQ: the step's gradient is scaled by 1/sqrt(numel·Qp)) or a learnable binary
point (QFX: step = 2^−round(f), f trained through the rounding), and optionally AdaRound's
learnable rounding of weights (Q-HyViT's reconstruction). `QuantLayer` wraps one nn.Conv2d or
nn.Linear: its input activation and its weight (optionally under a fixed 0/1 mask, for 2:4
sparsity) pass through their quantisers, then the layer's own op. On CPU these run as fp32
emulation: the quality is the quantised model's, the speed is not an int8 kernel's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from executors.methods.quant.fakequant import grad_scale, round_ste

ZETA, GAMMA = 1.1, -0.1  # AdaRound's rectified-sigmoid stretch


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


class FakeQuant(nn.Module):
    def __init__(
        self, bits: int, *, channels: int = 0, axis: int = 0, asymmetric: bool = False, fixed_point: bool = False
    ):
        super().__init__()
        self.bits, self.axis, self.asymmetric, self.fixed_point = bits, axis, asymmetric, fixed_point
        shape = (channels,) if channels else ()
        self.step = nn.Parameter(torch.ones(shape))  # LSQ step, or for fixed point: unused
        self.frac = nn.Parameter(torch.zeros(shape))  # fixed point: fractional bits f, step = 2^-round(f)
        self.zero = nn.Parameter(torch.zeros(shape))  # asymmetric: zero point (rounded in the forward)
        self.frac.requires_grad_(fixed_point)
        self.zero.requires_grad_(asymmetric)
        self.step.requires_grad_(not fixed_point)

    @property
    def levels(self) -> tuple[int, int]:
        if self.asymmetric:
            return 0, 2**self.bits - 1
        return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1

    def _shaped(self, value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if value.dim() == 0:
            return value
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return value.view(shape)

    def current_step(self) -> torch.Tensor:
        if self.fixed_point:
            return torch.pow(2.0, -round_ste(self.frac))
        return self.step.abs().clamp_min(1e-8)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Range from data: absmax (symmetric) or min/max (asymmetric), per channel if so built."""
        reduce = [d for d in range(x.dim()) if d != self.axis] if self.step.dim() else list(range(x.dim()))
        flat = x.detach().float()
        self.set_range(flat.amax(dim=reduce), flat.amin(dim=reduce))

    @torch.no_grad()
    def set_range(self, hi: torch.Tensor, lo: torch.Tensor) -> None:
        qn, qp = self.levels
        if self.asymmetric:
            lo, hi = lo.clamp(max=0), hi.clamp(min=0)
            step = ((hi - lo) / (qp - qn)).clamp_min(1e-8)
            self.zero.copy_((-lo / step).round())
        else:
            step = (torch.maximum(hi.abs(), lo.abs()) / qp).clamp_min(1e-8)
        self.step.copy_(step)
        self.frac.copy_(torch.floor(-torch.log2(step)))  # the finest binary point that still covers the range

    def forward(self, x: torch.Tensor, rounding: torch.Tensor | None = None) -> torch.Tensor:
        qn, qp = self.levels
        step = self._shaped(self.current_step(), x)
        if not self.fixed_point and self.training:
            step = grad_scale(step, 1.0 / (x.numel() / max(1, self.step.numel()) * qp) ** 0.5)
        zero = self._shaped(round_ste(self.zero), x) if self.asymmetric else 0.0
        scaled = x / step
        q = torch.floor(scaled) + rectified_sigmoid(rounding) if rounding is not None else round_ste(scaled)
        return (torch.clamp(q + zero, qn, qp) - zero) * step


Layer = nn.Conv2d | nn.Linear


class QuantLayer(nn.Module):
    """A conv or linear layer whose input and weight are fake-quantised (and the weight masked)."""

    mask: torch.Tensor | None

    def __init__(
        self,
        layer: Layer,
        weight_quant: FakeQuant | None,
        input_quant: FakeQuant | None,
        mask: torch.Tensor | None = None,
    ):
        super().__init__()
        self.layer: Layer = layer
        self.weight_quant, self.input_quant = weight_quant, input_quant
        self.register_buffer("mask", mask)
        self.rounding: nn.Parameter | None = None  # AdaRound's V, when a reconstruction learns it

    @property
    def weight(self) -> torch.Tensor:
        """The wrapped layer's fp32 weight (transformers reads `projection.weight.dtype` in a ViT's forward)."""
        return self.layer.weight

    def quantizers(self) -> list[FakeQuant]:
        return [q for q in (self.weight_quant, self.input_quant) if q is not None]

    def effective_weight(self) -> torch.Tensor:
        weight = self.layer.weight if self.mask is None else self.layer.weight * self.mask
        return self.weight_quant(weight, self.rounding) if self.weight_quant is not None else weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        weight, layer = self.effective_weight(), self.layer
        if isinstance(layer, nn.Conv2d):
            return F.conv2d(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        return F.linear(x, weight, layer.bias)


def quantizable(model: nn.Module) -> list[tuple[nn.Module, str, Layer]]:
    """(parent, attribute, layer) of every nn.Conv2d and nn.Linear, in module order."""
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, (nn.Conv2d, nn.Linear))
    ]


def wrap_layers(model: nn.Module, make) -> tuple[nn.Module, list[QuantLayer]]:
    """A deep copy of `model` with every conv/linear replaced by `make(layer) -> QuantLayer`."""
    copied = copy.deepcopy(model)
    wrapped = []
    for parent, name, layer in quantizable(copied):
        quant = make(layer)
        setattr(parent, name, quant)
        wrapped.append(quant)
    return copied, wrapped


def weight_quantizer(layer: Layer, bits: int, *, per_channel: bool = True, fixed_point: bool = False) -> FakeQuant:
    quant = FakeQuant(bits, channels=layer.weight.shape[0] if per_channel else 0, axis=0, fixed_point=fixed_point)
    quant.init_from(layer.weight)
    return quant


def input_axis(layer: nn.Module) -> int:
    return 1 if isinstance(layer, nn.Conv2d) else -1


@torch.no_grad()
def init_inputs(
    model: nn.Module, layers: Iterable[QuantLayer], batches: Iterable[torch.Tensor], percentile: float = 0.9999
) -> None:
    """Sets every input quantiser's range from the calibration batches, run unquantised: per-tensor
    ranges at the `percentile` of each batch's values (the widest batch wins), per-channel at min/max."""
    quants = {layer: layer.input_quant for layer in layers if layer.input_quant is not None}
    ranges: dict[QuantLayer, tuple[torch.Tensor, torch.Tensor]] = {}

    def observe(module: QuantLayer, args) -> None:
        x, quant = args[0].detach().float(), quants[module]
        if quant.step.dim():
            reduce = [d for d in range(x.dim()) if d != x.dim() + quant.axis and d != quant.axis]
            hi, lo = x.amax(dim=reduce), x.amin(dim=reduce)
        else:
            sample = x.flatten()[:: max(1, x.numel() // 1_000_000)]
            hi, lo = sample.quantile(percentile), sample.quantile(1 - percentile)
        if module in ranges:
            hi, lo = torch.maximum(hi, ranges[module][0]), torch.minimum(lo, ranges[module][1])
        ranges[module] = (hi, lo)

    hooks = [layer.register_forward_pre_hook(observe) for layer in quants]
    try:
        for layer in quants:
            layer.input_quant = None
        for batch in batches:
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
        for layer, quant in quants.items():
            layer.input_quant = quant
    for layer, (hi, lo) in ranges.items():
        quants[layer].set_range(hi, lo)


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """2:4 structured sparsity: the two largest |w| of every 4 consecutive inputs stay (conv: over
    in_channels × kernel, flattened as a sparse tensor core reads it)."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    if flat.shape[1] % 4:
        raise ValueError(f"2:4 sparsity needs input widths divisible by 4, got {flat.shape[1]}")
    groups = flat.abs().reshape(flat.shape[0], -1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return keep.reshape(weight.shape)


def layer_macs(model: nn.Module, sample: torch.Tensor) -> dict[nn.Module, int]:
    """Multiply-accumulates per QuantLayer for one `sample` batch (output elements × fan-in)."""
    macs: dict[nn.Module, int] = {}

    def count(module, args, output):
        fan_in = module.layer.weight[0].numel()
        macs[module] = macs.get(module, 0) + output.numel() * fan_in

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, QuantLayer)]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for hook in hooks:
            hook.remove()
    return macs
