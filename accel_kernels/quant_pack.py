"""Group-wise low-bit weight quantisation and bit packing, shared by the kernels and executors.

Format (what every low-bit kernel here reads):
- ``q`` are unsigned codes in ``[0, 2**bits - 1]``; a weight is ``(q - zero) * scale`` with one
  scale and one zero point per (output row, group of ``group_size`` input columns).
- Two row layouts, both exactly ``bits/8`` bytes per weight (ABQ-LLM's arbitrary-bit setting):
  ``"stream"`` (default) packs codes along the input dimension as a little-endian bit stream:
  code ``k`` occupies bits ``[k*bits, (k+1)*bits)`` of its row's bytes — for 2, 4 and 8 bits the
  usual "4 / 2 / 1 codes per byte, low bits first"; 3, 5, 6 and 7-bit codes straddle bytes.
  ``"planes"`` stores bit ``i`` of every code of a row as its own 1-bit stream ("bit plane"),
  planes one after the other: what the arbitrary-bit kernel reads, as whole bytes.
- Symmetric quantisation stores the midpoint ``2**(bits-1)`` as its zero point, so one kernel
  serves both flavours.

Pure torch: works on any device, no triton needed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

MIN_BITS, MAX_BITS = 2, 8
LAYOUTS = ("stream", "planes")


@dataclass(frozen=True)
class PackedWeight:
    """A quantised ``[out_features, in_features]`` weight; scales/zeros are ``[N, groups]``."""

    packed: torch.Tensor  # uint8 [N, row_bytes]: see the layouts above
    scales: torch.Tensor  # [N, ceil(K / group_size)]
    zeros: torch.Tensor  # [N, ceil(K / group_size)], integer-valued, same dtype as scales
    bits: int
    group_size: int
    out_features: int
    in_features: int
    layout: str = "stream"  # or "planes"

    @property
    def groups(self) -> int:
        return self.scales.shape[1]

    @property
    def row_bytes(self) -> int:
        return self.packed.shape[1]

    def nbytes(self) -> int:
        """Bytes a matmul must read for the weight (codes + scales + zeros)."""
        return sum(t.numel() * t.element_size() for t in (self.packed, self.scales, self.zeros))

    def to(self, device: torch.device | str) -> PackedWeight:
        return replace(self, packed=self.packed.to(device), scales=self.scales.to(device), zeros=self.zeros.to(device))


def _check_bits(bits: int) -> None:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")


def packed_row_bytes(in_features: int, bits: int) -> int:
    return (in_features * bits + 7) // 8


def _to_stream(q: torch.Tensor, bits: int) -> torch.Tensor:
    *lead, k = q.shape
    bit_index = torch.arange(bits, device=q.device, dtype=torch.int32)
    stream = ((q.to(torch.int32).unsqueeze(-1) >> bit_index) & 1).reshape(*lead, k * bits)
    pad = packed_row_bytes(k, bits) * 8 - k * bits
    stream = torch.nn.functional.pad(stream, (0, pad)).reshape(*lead, -1, 8)
    weights = 1 << torch.arange(8, device=q.device, dtype=torch.int32)
    return (stream * weights).sum(-1).to(torch.uint8)


def _from_stream(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    *lead, nbytes = packed.shape
    bit_index = torch.arange(8, device=packed.device, dtype=torch.int32)
    stream = ((packed.to(torch.int32).unsqueeze(-1) >> bit_index) & 1).reshape(*lead, nbytes * 8)
    codes = stream[..., : k * bits].reshape(*lead, k, bits)
    weights = 1 << torch.arange(bits, device=packed.device, dtype=torch.int32)
    return (codes * weights).sum(-1, dtype=torch.int32)


def _check_codes(q_int: torch.Tensor, bits: int) -> None:
    _check_bits(bits)
    if q_int.dtype.is_floating_point or q_int.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got {q_int.dtype}")
    if q_int.numel() and (int(q_int.min()) < 0 or int(q_int.max()) >= 1 << bits):
        raise ValueError(f"codes out of range for {bits} bits")


def _check_packed(packed: torch.Tensor, nbytes: int, bits: int, k: int) -> None:
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed codes must be uint8, got {packed.dtype}")
    if packed.shape[-1] != nbytes:
        raise ValueError(f"{packed.shape[-1]} bytes per row do not hold {k} codes of {bits} bits")


def pack_bits(q_int: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack codes ``[..., K]`` (values in ``[0, 2**bits)``) into uint8 ``[..., ceil(K*bits/8)]``."""
    _check_codes(q_int, bits)
    return _to_stream(q_int, bits)


def unpack_bits(packed: torch.Tensor, bits: int, K: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: uint8 ``[..., ceil(K*bits/8)]`` -> int32 codes ``[..., K]``."""
    _check_packed(packed, packed_row_bytes(K, bits), bits, K)
    return _from_stream(packed, bits, K)


def pack_bit_planes(q_int: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``[..., K]`` -> uint8 ``[..., bits * ceil(K/8)]``: plane 0 (lowest bit) first."""
    _check_codes(q_int, bits)
    return torch.cat([_to_stream((q_int >> i) & 1, 1) for i in range(bits)], dim=-1)


def unpack_bit_planes(packed: torch.Tensor, bits: int, K: int) -> torch.Tensor:
    """Inverse of :func:`pack_bit_planes`."""
    plane_bytes = packed_row_bytes(K, 1)
    _check_packed(packed, bits * plane_bytes, bits, K)
    planes = packed.split(plane_bytes, dim=-1)
    codes = _from_stream(planes[0], 1, K)
    for i, plane in enumerate(planes[1:], start=1):
        codes = codes | (_from_stream(plane, 1, K) << i)
    return codes


def unpack_codes(pw: PackedWeight) -> torch.Tensor:
    """The int32 ``[N, K]`` codes of a packed weight, whatever its layout."""
    unpack = unpack_bit_planes if pw.layout == "planes" else unpack_bits
    return unpack(pw.packed, pw.bits, pw.in_features)


def to_layout(pw: PackedWeight, layout: str) -> PackedWeight:
    """The same weight re-packed in ``layout`` (do it once, at load time, not per call)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == pw.layout:
        return pw
    pack = pack_bit_planes if layout == "planes" else pack_bits
    return replace(pw, packed=pack(unpack_codes(pw), pw.bits), layout=layout)


def _grouped(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[N, K]`` -> ``[N, groups, group_size]``, the ragged last group padded by edge values."""
    n, k = weight.shape
    groups = -(-k // group_size)
    pad = groups * group_size - k
    if pad:
        weight = torch.cat([weight, weight[:, -1:].expand(n, pad)], dim=1)  # keeps min/max unchanged
    return weight.reshape(n, groups, group_size)


def quantize_weight(
    weight: torch.Tensor,
    bits: int,
    group_size: int,
    symmetric: bool = False,
    scale_dtype: torch.dtype = torch.float16,
    layout: str = "stream",
) -> PackedWeight:
    """Round-to-nearest group-wise quantisation of a ``[N, K]`` weight (min/max by default).

    ``group_size`` may exceed K (one group per row = per-channel). Scales are computed in fp32,
    cast to ``scale_dtype`` and the codes rounded against the cast scale, so the stored format
    is exactly what gets dequantised.
    """
    _check_bits(bits)
    if weight.dim() != 2:
        raise ValueError(f"weight must be [out_features, in_features], got {tuple(weight.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be positive, got {group_size}")
    n, k = weight.shape
    group_size = min(group_size, k)
    w = _grouped(weight.detach().float(), group_size)
    qmax = (1 << bits) - 1
    if symmetric:
        half = 1 << (bits - 1)
        scale = w.abs().amax(-1) / (half - 1)
        zero = torch.full_like(scale, float(half))
    else:
        # The range always holds 0, so zero is exact and a constant group still quantises.
        lo, hi = w.amin(-1).clamp_max(0), w.amax(-1).clamp_min(0)
        scale = (hi - lo) / qmax
        zero = None
    scale = scale.clamp_min(torch.finfo(scale_dtype).tiny).to(scale_dtype).float()
    if zero is None:
        zero = torch.round(-lo / scale).clamp(0, qmax)
    q = torch.clamp(torch.round(w / scale.unsqueeze(-1)) + zero.unsqueeze(-1), 0, qmax)
    q = q.reshape(n, -1)[:, :k].to(torch.int32)
    stream = PackedWeight(
        packed=pack_bits(q, bits),
        scales=scale.to(scale_dtype),
        zeros=zero.to(scale_dtype),
        bits=bits,
        group_size=group_size,
        out_features=n,
        in_features=k,
    )
    return to_layout(stream, layout)


def dequantize_weight(pw: PackedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``[N, K]`` weight the packed codes stand for, ``(q - zero) * scale``."""
    q = unpack_codes(pw).float()
    scale = pw.scales.float().repeat_interleave(pw.group_size, dim=1)[:, : pw.in_features]
    zero = pw.zeros.float().repeat_interleave(pw.group_size, dim=1)[:, : pw.in_features]
    return ((q - zero) * scale).to(dtype)
