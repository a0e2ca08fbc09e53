"""`tok.pyramid_drop`: PyramidDrop — stage-wise dropping of image tokens, a pyramid of token counts.

Paper: Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid
Visual Redundancy Reduction" (arXiv 2410.17247, catalogue row 8). Mechanism as the paper
states it: the blocks are split into `stages` equal stages; at the end of each stage but the
last, a fixed share `ratio` (λ) of the image tokens still present is dropped, ranked by a
lightweight attention — only the query of one token (in an LVLM the last instruction token; in a
classifier ViT the class token, which is what the head reads) against every image token's key,
computed in that block. Tokens are dropped, not merged, so later stages simply see fewer.

Deviation: the score is read in the stage's last block between its attention and its MLP (the
same block's queries and keys as the paper), and the drop takes effect before that block's MLP.
The paper reports −55 % inference FLOPs on LLaVA-NeXT at a small accuracy cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from executors.families import default_runner
from executors.methods.tokens.engine import (
    TOKEN_METHODS,
    BlockState,
    classifier_of,
    drop_by_attention,
    requires_vit,
    token_model,
)
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class PyramidDropConfig(MethodConfig):
    stages: int = bounded(3, 2, 12)
    ratio: float = bounded(0.5, 0.0, 0.95)  # λ: share of the remaining image tokens dropped at each stage end
    version: int = 1


def stage_ends(blocks: int, stages: int) -> list[int]:
    """The last block of every stage but the final one (0-based)."""
    if stages > blocks:
        raise ValueError(f"tok.pyramid_drop: {stages} stages need at least as many blocks, the model has {blocks}")
    return [round(blocks * s / stages) - 1 for s in range(1, stages)]


def pyramid_reducer(config: PyramidDropConfig, blocks: int):
    ends = set(stage_ends(blocks, config.stages))

    def reduce(state: BlockState):
        if state.index not in ends:
            return state.x, state.size
        patches = state.x.shape[1] - 1
        return drop_by_attention(state, max(1, math.ceil(patches * (1 - config.ratio))))

    return reduce


@register_method(
    "tok.pyramid_drop",
    PyramidDropConfig,
    category="token-reduction",
    families=("vision",),
    changes=("outputs",),
    paper="PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual Redundancy Reduction",
    arxiv="2410.17247",
    catalogue_row=8,
    lossless=False,
)
class PyramidDrop(Method):
    order = 60
    composes_with = frozenset({"baseline", "quant.int8_dynamic"}) | TOKEN_METHODS

    def supports(self, bundle, device):
        return requires_vit(bundle)

    def apply(self, bundle, config):
        blocks = len(classifier_of(bundle.model).blocks())
        reducer = pyramid_reducer(config, blocks)
        model = token_model(bundle, reducer, wants_cls_attention=True)
        stats = {"drop_after_blocks": [i + 1 for i in stage_ends(blocks, config.stages)], "drop_ratio": config.ratio}
        return default_runner(bundle, model, stats)
