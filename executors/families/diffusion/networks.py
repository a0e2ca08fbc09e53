"""The denoisers: diffusers' `UNet2DModel` and `DiTTransformer2DModel` behind one call,
`net(x, t, labels, control)` → predicted noise, with the hooks the sampling methods use.

The forward passes are written out over diffusers' own sub-modules (their weights, their
blocks) so that a `Control` can change one evaluation: reuse cached units (feature caching),
drop units (architecture search), add an offset to the conditioning embedding (a guidance
adapter) or hand the attention processors per-step state (sparse attention). Without a
control each forward equals the diffusers model's own forward (a test checks it).

Units are what a cache may reuse or a search may drop:
- DiT: transformer block `i`; its cached value is the block's residual (output − input).
- UNet: the deep branch below skip level `d` (DeepCache's skip branches): reusing unit `d`
  recomputes only the outer `d` levels and takes the input of up block `-d` from the cache.
  The only droppable UNet unit is the mid block (same shape in and out).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class FeatureCache:
    """Unit outputs from earlier evaluations, one row per sample stream (cond rows, then uncond rows)."""

    values: dict[int, torch.Tensor] = field(default_factory=dict)

    def get(self, unit: int, rows: torch.Tensor) -> torch.Tensor:
        return self.values[unit][rows]

    def put(self, unit: int, rows: torch.Tensor, value: torch.Tensor, total_rows: int) -> None:
        store = self.values.get(unit)
        if store is None or store.shape[1:] != value.shape[1:]:
            store = self.values[unit] = value.new_zeros((total_rows, *value.shape[1:]))
        store[rows] = value.detach()

    def has(self, unit: int) -> bool:
        return unit in self.values

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.values.values())


@dataclass
class Control:
    """What one evaluation does differently from a plain forward."""

    rows: torch.Tensor  # the cache rows of this batch
    total_rows: int
    cache: FeatureCache | None = None
    reuse: frozenset[int] = frozenset()
    store: frozenset[int] | None = None  # units whose fresh output is cached (None: every computed unit)
    skip: frozenset[int] = frozenset()
    emb_offset: torch.Tensor | None = None  # added to the conditioning embedding, [batch, dim] or [units, batch, dim]
    attention: Any = None  # state the attention processors read (their method sets it)

    def stores(self, unit: int) -> bool:
        return self.cache is not None and (self.store is None or unit in self.store)


class Denoiser(nn.Module):
    """Common interface of the two architectures."""

    architecture = ""
    net: Any  # a diffusers model: its sub-modules are read by name

    @property
    def units(self) -> int:
        raise NotImplementedError

    @property
    def droppable(self) -> tuple[int, ...]:
        return ()

    @property
    def embedding_dim(self) -> int:
        raise NotImplementedError

    def unit_modules(self, unit: int) -> tuple[str, ...]:
        """Module-name prefixes (under `net.`) a reused or dropped unit does not run."""
        raise NotImplementedError


def _time(t: torch.Tensor | int, batch: int) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.long)
    return t.reshape(-1).expand(batch) if t.numel() == 1 else t


class DiTDenoiser(Denoiser):
    architecture = "diffusion-dit"

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @property
    def units(self) -> int:
        return len(self.net.transformer_blocks)

    @property
    def droppable(self) -> tuple[int, ...]:
        return tuple(range(self.units))

    @property
    def embedding_dim(self) -> int:
        return self.net.inner_dim

    def unit_modules(self, unit: int) -> tuple[str, ...]:
        return (f"transformer_blocks.{unit}.",)

    def conditioning(self, block: Any, t: torch.Tensor, labels: torch.Tensor, dtype) -> torch.Tensor:
        embed = block.norm1.emb  # each DiT block has its own timestep + label embedding
        return embed.timestep_embedder(embed.time_proj(t).to(dtype)) + embed.class_embedder.embedding_table(labels)

    def block(self, block: Any, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """diffusers' BasicTransformerBlock (adaLN-Zero, self-attention only) on a given conditioning."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.norm1.linear(
            block.norm1.silu(cond)
        ).chunk(6, dim=1)
        normed = block.norm1.norm(h) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        h = h + gate_msa[:, None] * block.attn1(normed)
        normed = block.norm3(h) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return h + gate_mlp[:, None] * block.ff(normed)

    def forward(self, x, t, labels, control: Control | None = None):
        t = _time(t, x.shape[0])
        h = self.net.pos_embed(x)
        offset = control.emb_offset if control is not None else None
        for i, block in enumerate(self.net.transformer_blocks):
            if control is not None and i in control.skip:
                continue
            if control is not None and control.cache is not None and i in control.reuse:
                h = h + control.cache.get(i, control.rows)
                continue
            cond = self.conditioning(block, t, labels, h.dtype)
            if offset is not None:
                cond = cond + (offset[i] if offset.dim() == 3 else offset)
            out = self.block(block, h, cond)
            if control is not None and control.stores(i):
                control.cache.put(i, control.rows, out - h, control.total_rows)  # type: ignore[union-attr]
            h = out
        return self.head(h, t, labels, None if offset is None else offset[0] if offset.dim() == 3 else offset)

    def head(self, h, t, labels, offset=None) -> torch.Tensor:
        """The final adaLN and linear, then unpatchify (the conditioning of block 0, as diffusers does)."""
        dit = self.net
        cond = self.conditioning(dit.transformer_blocks[0], t, labels, h.dtype)
        if offset is not None:
            cond = cond + offset
        shift, scale = dit.proj_out_1(torch.nn.functional.silu(cond)).chunk(2, dim=1)
        h = dit.proj_out_2(dit.norm_out(h) * (1 + scale[:, None]) + shift[:, None])
        side, patch, channels = int(h.shape[1] ** 0.5), dit.patch_size, dit.out_channels
        h = h.reshape(-1, side, side, patch, patch, channels)
        return torch.einsum("nhwpqc->nchpwq", h).reshape(-1, channels, side * patch, side * patch)


class UNetDenoiser(Denoiser):
    architecture = "diffusion-unet"

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @property
    def units(self) -> int:
        return len(self.net.down_blocks) + 1  # unit 0: the mid block; units 1..levels: skip branches

    @property
    def droppable(self) -> tuple[int, ...]:
        return (0,)

    @property
    def embedding_dim(self) -> int:
        return self.net.time_embedding.linear_2.out_features

    def unit_modules(self, unit: int) -> tuple[str, ...]:
        if unit == 0:
            return ("mid_block.",)
        levels = len(self.net.down_blocks)
        deeper = tuple(f"down_blocks.{i}." for i in range(unit, levels)) + (f"down_blocks.{unit - 1}.downsamplers.",)
        return deeper + ("mid_block.",) + tuple(f"up_blocks.{i}." for i in range(levels - unit))

    def embedding(self, t: torch.Tensor, labels: torch.Tensor, dtype) -> torch.Tensor:
        unet = self.net
        return unet.time_embedding(unet.time_proj(t).to(dtype)) + unet.class_embedding(labels).to(dtype)

    def forward(self, x, t, labels, control: Control | None = None):
        unet = self.net
        t = _time(t, x.shape[0])
        emb = self.embedding(t, labels, x.dtype)
        if control is not None and control.emb_offset is not None:
            emb = emb + control.emb_offset
        branch = max((u for u in (control.reuse if control is not None else ()) if u > 0), default=0)
        if branch and control is not None and control.cache is not None and control.cache.has(branch):
            return self._shallow(x, emb, branch, control)
        h = unet.conv_in(x)
        res: tuple[torch.Tensor, ...] = (h,)
        for down in unet.down_blocks:
            h, outs = down(hidden_states=h, temb=emb)
            res += outs
        if unet.mid_block is not None and not (control is not None and 0 in control.skip):
            h = unet.mid_block(h, emb)
        levels = len(unet.up_blocks)
        for i, up in enumerate(unet.up_blocks):
            if control is not None and control.stores(levels - i):
                control.cache.put(levels - i, control.rows, h, control.total_rows)  # type: ignore[union-attr]
            take = len(up.resnets)
            h, res = up(h, res[-take:], emb), res[:-take]
        return self._out(h)

    def _shallow(self, x, emb, branch: int, control: Control) -> torch.Tensor:
        """DeepCache: the outer `branch` levels fresh, the input of up block -branch from the cache."""
        unet = self.net
        h = unet.conv_in(x)
        res: tuple[torch.Tensor, ...] = (h,)
        for level in range(branch):
            down = unet.down_blocks[level]
            attentions: Iterable = getattr(down, "attentions", None) or [None] * len(down.resnets)
            for resnet, attention in zip(down.resnets, attentions, strict=True):
                h = resnet(h, emb)
                h = attention(h) if attention is not None else h
                res += (h,)
            if level < branch - 1 and down.downsamplers is not None:
                for downsampler in down.downsamplers:
                    h = downsampler(h)
                res += (h,)
        h = control.cache.get(branch, control.rows)  # type: ignore[union-attr]
        levels = len(unet.up_blocks)
        for up in unet.up_blocks[levels - branch :]:
            take = len(up.resnets)
            h, res = up(h, res[-take:], emb), res[:-take]
        return self._out(h)

    def _out(self, h: torch.Tensor) -> torch.Tensor:
        unet = self.net
        return unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))


def denoiser_for(net: nn.Module) -> Denoiser:
    name = type(net).__name__
    if name == "DiTTransformer2DModel":
        return DiTDenoiser(net)
    if name == "UNet2DModel":
        return UNetDenoiser(net)
    raise TypeError(f"no denoiser for {name}; the diffusion family runs UNet2DModel and DiTTransformer2DModel")


@torch.no_grad()
def mac_profile(denoiser: Denoiser, resolution: int, channels: int) -> dict[str, int]:
    """Multiply-accumulates of each Conv2d/Linear (and DiT attention's two matmuls) in one forward at batch 1."""
    macs: dict[str, int] = {}
    hooks = []
    for name, module in denoiser.net.named_modules():
        if isinstance(module, nn.Conv2d):
            per_out = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            hooks.append(module.register_forward_hook(_counter(macs, name, lambda out, k=per_out: out.numel() * k)))
        elif isinstance(module, nn.Linear):
            hooks.append(
                module.register_forward_hook(_counter(macs, name, lambda out, k=module.in_features: out.numel() * k))
            )
        elif type(module).__name__ == "Attention" and denoiser.architecture == "diffusion-dit":
            # QK^T and PV: 2 · tokens² · inner dim (the projections are Linear layers, counted above)
            hooks.append(
                module.register_forward_hook(
                    _counter(macs, name + ".matmul", lambda out: 2 * out.shape[1] ** 2 * out.shape[2])
                )
            )
    try:
        x = torch.zeros(1, channels, resolution, resolution)
        denoiser(x, torch.tensor([0]), torch.tensor([0]))
    finally:
        for hook in hooks:
            hook.remove()
    return macs


def _counter(macs: dict[str, int], name: str, count):
    def hook(_module, _inputs, output):
        macs[name] = macs.get(name, 0) + int(count(output))

    return hook


def skipped_fraction(denoiser: Denoiser, macs: dict[str, int], units: Iterable[int]) -> float:
    """Share of one forward's MACs that reusing or dropping `units` saves (overlapping units count once)."""
    prefixes = tuple(p for u in set(units) for p in denoiser.unit_modules(u))
    total = sum(macs.values())
    saved = sum(v for name, v in macs.items() if (name + ".").startswith(prefixes) or name.startswith(prefixes))
    return saved / total if total else 0.0
