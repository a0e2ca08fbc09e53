"""The models the training workloads train: the LM family's decoder, a small CNN with batch
norm and a small ViT built from the same transformer blocks as the decoder.

The ViT reuses `executors.families.lm.model.Block` (attention without a causal mask, the
rotation switched off, learned 2-D positions interpolated to the input's size), so a method
that works on transformer blocks — qk-layernorm, depth stacking, coalescing — finds the same
module names (`layers[i].attention.wq`, `feed_forward.w1`, …) in the LM and the ViT. Both
classifiers pool globally, so they accept the smaller inputs of a resolution curriculum, and
end in `features → dropout → head`, the part multi-sample dropout duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from executors.families.lm.model import Block, DecoderLM, LMConfig, RMSNorm
from executors.families.lm.tokenizers import BYTE_TOKENIZER_VOCAB


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 16
    patch: int = 4
    dim: int = 32
    layers: int = 4
    heads: int = 4
    ffn: int = 64
    classes: int = 10
    dropout: float = 0.3

    def block_config(self) -> LMConfig:
        return LMConfig(
            vocab_size=1,
            dim=self.dim,
            n_layers=self.layers,
            n_heads=self.heads,
            n_kv_heads=self.heads,
            ffn_dim=self.ffn,
            max_seq_len=(self.image_size // self.patch) ** 2,
        )


class TinyViT(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        grid = config.image_size // config.patch
        self.patch_embed = nn.Conv2d(1, config.dim, config.patch, config.patch)
        self.position = nn.Parameter(torch.randn(1, config.dim, grid, grid) * 0.02)
        self.layers = nn.ModuleList(Block(config.block_config()) for _ in range(config.layers))
        self.norm = RMSNorm(config.dim, 1e-5)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.dim, config.classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        position: torch.Tensor = self.position
        if x.shape[-2:] != position.shape[-2:]:
            position = F.interpolate(position, size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = (x + position).flatten(2).transpose(1, 2)
        steps, head_dim = x.shape[1], self.config.dim // self.config.heads
        cos, sin = x.new_ones(steps, head_dim), x.new_zeros(steps, head_dim)  # no rotation: positions are learned
        everything = torch.ones(steps, steps, dtype=torch.bool, device=x.device)  # bidirectional attention
        for layer in self.layers:
            x = layer(x, cos, sin, None, 0, everything)
        return self.norm(x).mean(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


@dataclass(frozen=True)
class CNNConfig:
    width: int = 16
    classes: int = 10
    dropout: float = 0.3


class TinyCNN(nn.Module):
    """Three 3×3 conv + BatchNorm + ReLU stages (the last two stride 2), global average pooling."""

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        w = config.width
        stages = []
        for cin, cout, stride in ((1, w, 1), (w, 2 * w, 2), (2 * w, 4 * w, 2)):
            stages += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.body = nn.Sequential(*stages)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(4 * w, config.classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images).mean((2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


def byte_lm_config(dim: int, layers: int, heads: int, ffn: int, context: int) -> LMConfig:
    return LMConfig(
        vocab_size=BYTE_TOKENIZER_VOCAB,
        dim=dim,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=heads,
        ffn_dim=ffn,
        max_seq_len=context,
    )


def build(architecture: str, config, seed: int) -> nn.Module:
    """A freshly initialised model: the same seed gives the same weights on every machine."""
    torch.manual_seed(seed)
    if architecture == "lm":
        return DecoderLM(config)
    if architecture == "vit":
        return TinyViT(config)
    if architecture == "cnn":
        return TinyCNN(config)
    raise ValueError(f"unknown architecture {architecture!r}")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
