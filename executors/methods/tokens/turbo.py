"""`tok.turbo`: Turbo — informativity-driven token merging, a plug-in at inference.

Paper: Ju, Wang et al., "Turbo: Informativity-Driven Acceleration Plug-In for Vision-Language
Models" (arXiv 2312.07408, catalogue row 22). Mechanism as the paper states it: each token's
information degree combines its mutual redundancy (how much it duplicates another token: the
best cosine match of its key in the other set of a bipartite split, as in ToMe) and its semantic
value (its contribution to the global semantics: the class token's attention to it). Tokens of
high redundancy and low semantic value are merged first — the ranking is redundancy − α ·
semantic value — into their best match by a size-weighted average, `r` per block, training-free.

Semantic value is the class token's attention (averaged over heads) times the number of tokens,
so that it averages 1 whatever the resolution and α weighs it against a cosine; `alpha` is the
paper's balance coefficient, its default here ours (α = 0 is ToMe's ranking exactly). The paper
reports ~2× throughput on BLIP/CLIP-style understanding tasks with negligible loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families import default_runner
from executors.methods.tokens.engine import TOKEN_METHODS, BlockState, merge_pairs, requires_vit, token_model
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class TurboConfig(MethodConfig):
    r: int = bounded(0, 0, 512)  # tokens merged per block; 0 = ratio × the image's patch tokens
    ratio: float = bounded(0.1, 0.0, 0.5)
    alpha: float = bounded(0.5, 0.0, 10.0)  # weight of semantic value against mutual redundancy
    version: int = 1


def turbo_reducer(config: TurboConfig):
    def reduce(state: BlockState):
        if state.cls_attention is None:
            raise ValueError("tok.turbo reads the class token's attention (its TokenViT must want it)")
        semantic = state.cls_attention[:, ::2] * state.x.shape[1]  # set A's semantic value, mean ≈ 1
        r = config.r or max(1, round(config.ratio * state.patches))
        return merge_pairs(state, r, redundancy_offset=config.alpha * semantic)

    return reduce


@register_method(
    "tok.turbo",
    TurboConfig,
    category="token-reduction",
    families=("vision",),
    changes=("outputs",),
    paper="Turbo: Informativity-Driven Acceleration Plug-In for Vision-Language Models",
    arxiv="2312.07408",
    catalogue_row=22,
    lossless=False,
)
class Turbo(Method):
    order = 60
    composes_with = frozenset({"baseline", "quant.int8_dynamic"}) | TOKEN_METHODS

    def supports(self, bundle, device):
        return requires_vit(bundle)

    def apply(self, bundle, config):
        model = token_model(bundle, turbo_reducer(config), wants_cls_attention=True)
        return default_runner(bundle, model, {"turbo_alpha": config.alpha, "turbo_ratio": config.ratio})
