"""`tok.globalcom2`: GlobalCom² — the thumbnail commands how many tokens each crop keeps, and which.

Paper: Liu et al., "Global Compression Commander: Plug-and-Play Inference Acceleration for
High-Resolution Large Vision-Language Models" (arXiv 2501.05179, catalogue row 11). Mechanism as
the paper and the authors' code (llava_arch.py) state it, at the junction where the views'
tokens are joined (`executors.families.vision.models`, multi-view input):

1. The thumbnail's class-token attention over its patch tokens (from the last per-view block)
   is summed over the region each crop covers: each crop's share of the global attention.
2. Retention per crop: softmax(share / τ) = p, scale_c = ρ · (1 + p_c − mean p), capped at 1,
   so an informative crop keeps more than ρ and a background crop less, the budget ρ on average.
3. Inside a crop, tokens are ranked by the L2-normalised sum of the crop's own class-token
   attention and the thumbnail's attention upsampled onto the crop's area; the top ones stay.
4. The thumbnail itself keeps ρ of its tokens by its class-token attention.

A batch keeps the same number of tokens per image: the crops' budget round(ρ · crop tokens) is
split in proportion to the scales (largest remainder). τ is applied to shares that sum to 1
(the authors' code divides un-normalised attention sums by 10); the default 0.1 is ours. On
single-view input there is no thumbnail to command and the model runs unchanged. The paper
keeps > 90 % of LLaVA-NeXT's performance at 10 % of the visual tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from executors.families import default_runner
from executors.methods.tokens.engine import TOKEN_METHODS, keep_tokens, requires_vit, token_model, with_class_token
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class GlobalCom2Config(MethodConfig):
    retention: float = bounded(0.25, 0.01, 1.0)  # ρ: share of the views' patch tokens kept on average
    temperature: float = bounded(0.1, 0.001, 100.0)  # τ on the crops' shares of thumbnail attention
    version: int = 1


def crop_scales(shares: torch.Tensor, retention: float, temperature: float) -> torch.Tensor:
    p = (shares / temperature).softmax(-1)
    return (retention * (1 + p - p.mean(-1, keepdim=True))).clamp(max=1.0)


def quotas(scales: torch.Tensor, per_crop: int, budget: int) -> torch.Tensor:
    """Integer tokens per crop [B, C] summing to `budget` (at most crops × `per_crop`), proportional to
    `scales`: floors first, then one token at a time to the crops with room, largest remainder first."""
    want = scales / scales.sum(-1, keepdim=True) * budget
    counts = want.floor().clamp(max=per_crop)
    for _ in range(budget):  # a crop at its cap hands its share on to the others
        short = budget - counts.sum(-1)
        if not (short > 0).any():
            break
        room = counts < per_crop
        rank = (want - counts).masked_fill(~room, -torch.inf).argsort(-1, descending=True).argsort(-1)
        counts = counts + ((rank < short[:, None]) & room).to(counts.dtype)
    return counts.long()


def globalcom2_junction(config: GlobalCom2Config):
    def junction(views: torch.Tensor, cls_attention: torch.Tensor) -> torch.Tensor:
        batch, count, tokens, width = views.shape
        crops, patches = count - 1, tokens - 1
        side, grid = round(patches**0.5), round(crops**0.5)
        thumb = cls_attention[:, 0, 1:]  # [B, N]
        thumb_map = thumb.view(batch, 1, side, side)
        regions = F.avg_pool2d(thumb_map, side // grid).flatten(1) * (side // grid) ** 2  # [B, C] attention sums
        shares = regions / regions.sum(-1, keepdim=True)
        budget = round(config.retention * crops * patches)
        quota = quotas(crop_scales(shares, config.retention, config.temperature), patches, budget)
        # the thumbnail's attention upsampled to the whole image, then cut into the crops' areas
        full = F.interpolate(thumb_map, size=(grid * side, grid * side), mode="bilinear", align_corners=False)
        guide = full.view(batch, grid, side, grid, side).permute(0, 1, 3, 2, 4).reshape(batch, crops, patches)
        local = cls_attention[:, 1:, 1:]
        score = F.normalize(local, dim=-1) + F.normalize(guide, dim=-1)  # [B, C, N]
        rank = score.argsort(-1, descending=True).argsort(-1)
        keep = rank < quota[..., None]  # exactly `budget` per image
        index = keep.flatten(1).nonzero()[:, 1].view(batch, budget)
        crop_tokens = keep_tokens(views[:, 1:, 1:].reshape(batch, crops * patches, width), index)
        thumb_index = with_class_token(thumb.topk(max(1, round(config.retention * patches)), dim=-1).indices)
        return torch.cat([keep_tokens(views[:, 0], thumb_index), crop_tokens], dim=1)

    return junction


@register_method(
    "tok.globalcom2",
    GlobalCom2Config,
    category="token-reduction",
    families=("vision",),
    changes=("outputs",),
    paper="Global Compression Commander: Plug-and-Play Inference Acceleration for High-Resolution "
    "Large Vision-Language Models (GlobalCom²)",
    arxiv="2501.05179",
    catalogue_row=11,
    lossless=False,
)
class GlobalCom2(Method):
    order = 60
    composes_with = frozenset({"baseline", "quant.int8_dynamic"}) | TOKEN_METHODS

    def supports(self, bundle, device):
        return requires_vit(bundle)

    def apply(self, bundle, config):
        model = token_model(bundle, junction=globalcom2_junction(config))
        stats = {"retention": config.retention, "temperature": config.temperature, "applies_to": "multi-view input"}
        return default_runner(bundle, model, stats)
