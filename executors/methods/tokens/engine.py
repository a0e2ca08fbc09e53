"""The forward every token-reduction method runs: a transformers ViT's own weights, block by block,
with a reducer between each block's attention and its MLP.

`TokenViT` reproduces `ViTForImageClassification` exactly when no reducer acts (a test checks
it) and hands a reducer what token methods score with: the block's keys averaged over heads
(ToMe's similarity metric), the class token's attention to every token (averaged over heads:
PyramidDrop's and Turbo's semantic score), and each token's size (how many patches it stands
for, after merging). With sizes, attention adds log(size) to the logits (ToMe's proportional
attention) so a merged token counts as the patches it replaced. The class token is always
position 0 and is never reduced.

Multi-view input (`[B, V, 3, r, r]`, see `executors.families.vision.models`) runs the first
`split` blocks on every view alone — reducers act inside each view — then `junction` may cut the
views' tokens before they are joined into one sequence for the remaining blocks (GlobalCom²).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BlockState:
    """What a reducer sees after block `index`'s attention: tokens, sizes and scores."""

    index: int
    patches: int  # patch tokens when this run of blocks began (the image's, or the joined views')
    x: torch.Tensor  # [B, T, D], class token first
    size: torch.Tensor | None  # [B, T, 1] patches per token; None until something merges
    keys: torch.Tensor  # [B, T, head_dim] keys averaged over heads
    cls_attention: torch.Tensor | None  # [B, T] the class token's attention, averaged over heads


Reducer = Callable[[BlockState], tuple[torch.Tensor, torch.Tensor | None]]
Junction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (views' tokens, their class attention) → kept


def keep_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b]] for [B, T, D] tokens and [B, K] indices."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def with_class_token(patch_index: torch.Tensor) -> torch.Tensor:
    """Indices of kept patch tokens (0-based among patches) → token indices with the class token first."""
    zero = torch.zeros(patch_index.shape[0], 1, dtype=patch_index.dtype, device=patch_index.device)
    return torch.cat([zero, patch_index.sort(dim=1).values + 1], dim=1)


class TokenViT(nn.Module):
    """A ViT classifier whose blocks may reduce tokens; shares the wrapped classifier's weights."""

    def __init__(
        self,
        classifier: nn.Module,
        reducer: Reducer | None = None,
        *,
        wants_cls_attention: bool = False,
        junction: Junction | None = None,
    ):
        super().__init__()
        if classifier.model_type != "vit":
            raise ValueError("token reduction runs on ViT models")
        self.classifier: Any = classifier  # an ImageClassifier (executors/families/vision/models.py)
        self.reducer, self.junction = reducer, junction
        self.wants_cls_attention = wants_cls_attention or junction is not None
        self.last_tokens = 0  # tokens left before the head in the latest call (per image)

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.classifier.net.vit.layers)

    def block(self, index: int, x: torch.Tensor, size: torch.Tensor | None, patches: int):
        layer: Any = self.blocks[index]  # a transformers ViTLayer
        attention = layer.attention
        heads, head_dim = attention.num_attention_heads, attention.head_dim
        h = layer.layernorm_before(x)
        batch, tokens, _ = h.shape

        def split(projection: nn.Linear) -> torch.Tensor:
            return projection(h).view(batch, tokens, heads, head_dim).transpose(1, 2)

        q, k, v = split(attention.q_proj), split(attention.k_proj), split(attention.v_proj)
        bias = size.log().transpose(1, 2)[:, None] if size is not None else None  # [B, 1, 1, T]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attention.scaling)
        x = x + attention.o_proj(out.transpose(1, 2).reshape(batch, tokens, heads * head_dim))
        cls_attention = None
        if self.wants_cls_attention:
            logits = (q[:, :, :1] @ k.transpose(-1, -2)) * attention.scaling  # the class token's query only
            if bias is not None:
                logits = logits + bias
            cls_attention = logits.softmax(-1).mean(dim=1)[:, 0]
        if self.reducer is not None:
            x, size = self.reducer(BlockState(index, patches, x, size, k.mean(dim=1), cls_attention))
        x = x + layer.mlp(layer.layernorm_after(x))
        return x, size, cls_attention

    def run(self, x: torch.Tensor, start: int, stop: int, size=None):
        cls_attention, patches = None, x.shape[1] - 1
        for index in range(start, stop):
            x, size, cls_attention = self.block(index, x, size, patches)
        return x, size, cls_attention

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        depth = len(self.blocks)
        if pixels.dim() == 5:
            x, size = self.join_views(pixels)
            x, _, _ = self.run(x, self.classifier.split, depth, size)
        else:
            x, _, _ = self.run(self.classifier.embed(pixels), 0, depth)
        self.last_tokens = x.shape[1]
        return self.classifier.head(self.classifier.read_out(x))

    def join_views(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each view through the encoder blocks alone, then (after `junction`) one joined sequence:
        the thumbnail's class and patch tokens, then every crop's patch tokens (and their sizes)."""
        batch, count = views.shape[:2]
        x, size, cls_attention = self.run(self.classifier.embed(views.flatten(0, 1)), 0, self.classifier.split)
        x = x.unflatten(0, (batch, count))
        if self.junction is not None:
            if size is not None:
                raise ValueError("a junction reducer expects unmerged view tokens")
            return self.junction(x, cls_attention.unflatten(0, (batch, count))), None
        if size is not None:
            size = size.unflatten(0, (batch, count))
            size = torch.cat([size[:, 0], size[:, 1:, 1:].flatten(1, 2)], dim=1)
        return torch.cat([x[:, 0], x[:, 1:, 1:].flatten(1, 2)], dim=1), size


def merge_pairs(state: BlockState, r: int, redundancy_offset: torch.Tensor | None = None):
    """Bipartite soft matching (ToMe): tokens alternate into sets A and B; each A token's edge is its
    most similar B token by key cosine; the `r` A tokens with the strongest edges are averaged
    (size-weighted) into their B partner. `redundancy_offset` [B, |A|] is subtracted from the edge
    scores before ranking (Turbo's semantic term); the class token (first in A) is never merged."""
    x, size = state.x, state.size if state.size is not None else torch.ones_like(state.x[..., :1])
    r = min(r, (x.shape[1] - 1) // 2)
    if r <= 0:
        return x, state.size
    metric = state.keys / state.keys.norm(dim=-1, keepdim=True)
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = a @ b.transpose(-1, -2)
    best, partner = scores.max(dim=-1)  # [B, |A|]
    ranking = best if redundancy_offset is None else best - redundancy_offset
    ranking = ranking.clone()
    ranking[:, 0] = -math.inf  # the class token
    order = ranking.argsort(dim=-1, descending=True)
    merged, kept = order[:, :r], order[:, r:].sort(dim=-1).values
    weighted = x * size
    src_x, dst_x = weighted[:, ::2], weighted[:, 1::2]
    src_size, dst_size = size[:, ::2], size[:, 1::2]
    target = partner.gather(1, merged)
    dst_x = dst_x.scatter_add(1, target[..., None].expand(-1, -1, x.shape[-1]), keep_tokens(src_x, merged))
    dst_size = dst_size.scatter_add(1, target[..., None], keep_tokens(src_size, merged))
    new_size = torch.cat([keep_tokens(src_size, kept), dst_size], dim=1)
    new_x = torch.cat([keep_tokens(src_x, kept), dst_x], dim=1) / new_size
    return new_x, new_size


def drop_by_attention(state: BlockState, keep: int, score: torch.Tensor | None = None):
    """Keeps the class token and the `keep` patch tokens the class token attends to most (or by `score`)."""
    patches = state.x.shape[1] - 1
    if keep >= patches:
        return state.x, state.size
    scores = state.cls_attention if score is None else score
    if scores is None:
        raise ValueError("dropping by attention needs the class token's attention (wants_cls_attention)")
    ranking = scores[:, 1:]
    index = with_class_token(ranking.topk(keep, dim=-1).indices)
    size = keep_tokens(state.size, index) if state.size is not None else None
    return keep_tokens(state.x, index), size


def chained(first: Reducer | None, second: Reducer) -> Reducer:
    """Two reducers in one block: the second sees what the first left (scores are re-read for it)."""
    if first is None:
        return second

    def both(state: BlockState):
        x, size = first(state)
        if x.shape[1] == state.x.shape[1]:
            return second(BlockState(state.index, state.patches, x, size, state.keys, state.cls_attention))
        return x, size  # the first reduced: its scores no longer align with the tokens

    return both


def token_model(bundle, reducer: Reducer | None = None, *, wants_cls_attention=False, junction=None) -> TokenViT:
    """The bundle's ViT with `reducer` (stacked on a token method already applied, or on int8 weights)."""
    model = bundle.model
    if isinstance(model, TokenViT):
        if junction is not None and model.junction is not None:
            raise ValueError("two junction reducers do not compose")
        return TokenViT(
            model.classifier,
            chained(model.reducer, reducer) if reducer else model.reducer,
            wants_cls_attention=wants_cls_attention or model.wants_cls_attention,
            junction=junction or model.junction,
        )
    return TokenViT(model, reducer, wants_cls_attention=wants_cls_attention, junction=junction)


def classifier_of(model: nn.Module) -> Any:
    """The ImageClassifier under a token method's model (or the model itself)."""
    return model.classifier if isinstance(model, TokenViT) else model


def requires_vit(bundle) -> str | None:
    if "vit_tokens" not in bundle.capabilities:
        return "reduces a ViT's patch tokens; this model has no token sequence (a CNN or a hybrid's folded patches)"
    return None


TOKEN_METHODS = frozenset({"tok.tome", "tok.pyramid_drop", "tok.turbo", "tok.globalcom2"})
