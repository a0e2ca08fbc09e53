"""Exact fake quantisation shared by the low-bit methods (ABQ-LLM, EdgeQAT).

"Exact" means the quantise-dequantise here produces bit for bit the weights that
`accel_kernels.quant_pack` stores and `accel_kernels.quant_pack.dequantize_weight` (hence every low-bit
kernel) reads back: codes in ``[0, qmax]``, one fp16 scale and one integer zero point per
(output row, group of input columns), ``w = (q - zero) * scale``. Calibration and training
run on these functions (rounding passes gradients straight through), and the deployed model
is the same grid packed with `pack_grid`, so quality measured on CPU is the quality the CUDA
kernels deliver.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from accel_kernels.quant_pack import PackedWeight, pack_bit_planes, pack_bits

SCALE_DTYPE = torch.float16  # what accel_kernels.quant_pack stores


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity in the backward pass (straight-through estimator)."""
    return (x.round() - x).detach() + x


def grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x in the forward pass, gradient multiplied by `factor` (LSQ's step-size gradient scaling)."""
    return (x - x * factor).detach() + x * factor


@dataclass(frozen=True)
class WeightGrid:
    """Per-group quantisation grid of a [N, K] weight: scale and zero are [N, groups]."""

    scale: torch.Tensor
    zero: torch.Tensor
    qmax: int
    group_size: int

    @property
    def storage_bits(self) -> int:
        """Bits per code in storage: the smallest width that holds every level 0..qmax."""
        return max(2, int(self.qmax).bit_length())


def levels(bits: int, bit_balance: bool) -> int:
    """Largest code. ABQ-LLM's bit balance gives INT2 a fifth level so the grid is symmetric
    about its zero point ({-2,-1,0,1,2} instead of {-2,-1,0,1}); it then needs 3 bits of storage."""
    return 2**bits if bit_balance and bits == 2 else 2**bits - 1


def grouped(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """[N, K] → [N, groups, group_size]; a ragged last group is padded with its edge value
    (as accel_kernels.quant_pack does, so min/max and therefore the grid are unchanged)."""
    n, k = weight.shape
    groups = -(-k // group_size)
    pad = groups * group_size - k
    if pad:
        weight = torch.cat([weight, weight[:, -1:].expand(n, pad)], dim=1)
    return weight.reshape(n, groups, group_size)


def weight_grid(
    weight: torch.Tensor,
    bits: int,
    group_size: int,
    *,
    bit_balance: bool = False,
    upper: torch.Tensor | None = None,
    lower: torch.Tensor | None = None,
) -> WeightGrid:
    """Asymmetric min/max grid per group, optionally clipped by learnable factors.

    `upper`/`lower` are logits [N, groups] (OmniQuant/ABQ learnable weight clipping): the group's
    max and min are scaled by their sigmoid. The range always holds 0, so zero is exact.
    """
    group_size = min(group_size, weight.shape[1])
    w = grouped(weight.float(), group_size)
    hi, lo = w.amax(-1), w.amin(-1)
    if upper is not None:
        hi = hi * torch.sigmoid(upper)
    if lower is not None:
        lo = lo * torch.sigmoid(lower)
    hi, lo = hi.clamp_min(0), lo.clamp_max(0)
    qmax = levels(bits, bit_balance)
    # Cast through fp16 like the stored format, so codes are rounded against the stored scale.
    scale = ((hi - lo) / qmax).clamp_min(torch.finfo(SCALE_DTYPE).tiny)
    scale = scale + (scale.to(SCALE_DTYPE).float() - scale).detach()
    zero = torch.round(-lo.detach() / scale.detach()).clamp(0, qmax)
    return WeightGrid(scale, zero, qmax, group_size)


def fake_quant_weight(weight: torch.Tensor, grid: WeightGrid) -> torch.Tensor:
    """Quantise-dequantise on the grid; gradients reach the weight and the clipping factors."""
    n, k = weight.shape
    w = grouped(weight.float(), grid.group_size)
    q = torch.clamp(round_ste(w / grid.scale[..., None]) + grid.zero[..., None], 0, grid.qmax)
    return ((q - grid.zero[..., None]) * grid.scale[..., None]).reshape(n, -1)[:, :k]


def pack_grid(weight: torch.Tensor, grid: WeightGrid, layout: str = "stream") -> PackedWeight:
    """The kernels' packed format for exactly what `fake_quant_weight` computes."""
    n, k = weight.shape
    with torch.no_grad():
        w = grouped(weight.float(), grid.group_size)
        scale, zero = grid.scale.detach().float(), grid.zero.detach().float()
        q = torch.clamp(torch.round(w / scale[..., None]) + zero[..., None], 0, grid.qmax)
        codes = q.reshape(n, -1)[:, :k].to(torch.int32)
    bits = grid.storage_bits
    packed = pack_bit_planes(codes, bits) if layout == "planes" else pack_bits(codes, bits)
    return PackedWeight(
        packed=packed,
        scales=scale.to(SCALE_DTYPE),
        zeros=zero.to(SCALE_DTYPE),
        bits=bits,
        group_size=grid.group_size,
        out_features=n,
        in_features=k,
        layout=layout,
    )


def fake_quant_per_token(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Dynamic asymmetric per-token activation quantisation (ABQ-LLM's A8): one min/max per row."""
    if bits >= 16:
        return x
    qmax = 2**bits - 1
    hi, lo = x.amax(-1, keepdim=True).clamp_min(0), x.amin(-1, keepdim=True).clamp_max(0)
    scale = ((hi - lo) / qmax).clamp_min(1e-8)
    zero = torch.round(-lo / scale).detach()
    q = torch.clamp(round_ste(x / scale) + zero, 0, qmax)
    return (q - zero) * scale


def lsq(x: torch.Tensor, step: torch.Tensor, bits: int, signed: bool = True) -> torch.Tensor:
    """Learned Step-size Quantisation (Esser et al.), the quantiser EdgeQAT trains with:
    symmetric integer grid, step learned with its gradient scaled by 1/sqrt(numel·Qp)."""
    qn, qp = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    step = grad_scale(step, 1.0 / (x.numel() * qp) ** 0.5)
    return round_ste(torch.clamp(x / step, qn, qp)) * step


def absmax_step(x: torch.Tensor, bits: int, dim: int | None = None) -> torch.Tensor:
    """Initial LSQ step max|x|/Qp (per row when `dim` is given). LSQ's own 2·mean|x|/sqrt(Qp)
    suits 2-4 bits; at 8 bits it is ~4x coarser than the absmax grid PTQ int8 already uses."""
    qp = 2 ** (bits - 1) - 1
    top = x.detach().abs().amax() if dim is None else x.detach().abs().amax(dim=dim)
    return (top / qp).clamp_min(1e-8)
