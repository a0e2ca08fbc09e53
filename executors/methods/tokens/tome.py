"""`tok.tome`: Token Merging — the training-free token reducer a user tries first.

Paper: Bolya, Fu, Dai, Zhang, Feichtenhofer, Hoffman, "Token Merging: Your ViT But Faster"
(ICLR 2023, arXiv 2210.09461). Mechanism as the paper and the authors' code state it: in every
block, between attention and the MLP, bipartite soft matching on the block's keys (averaged over
heads) — tokens alternate into sets A and B, each A token's edge goes to its most similar B
token (cosine), and the `r` strongest edges are merged by a size-weighted average; the class
token is protected. Each token carries its size (patches it stands for), and attention adds
log(size) to the logits (proportional attention), so merging keeps attention's weighting.

`r` is fixed per block as in the paper; with `r = 0` it is `ratio` × the image's patch tokens
(so one config means the same reduction at 32, 64 or 128 px). The paper's headline: ViT-L/16
(MAE) at ~2× throughput for ~0.3 % top-1 on ImageNet; the gain grows with the token count.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families import default_runner
from executors.methods.tokens.engine import TOKEN_METHODS, BlockState, merge_pairs, requires_vit, token_model
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class ToMeConfig(MethodConfig):
    r: int = bounded(0, 0, 512)  # tokens merged per block; 0 = ratio × the image's patch tokens
    ratio: float = bounded(0.1, 0.0, 0.5)
    version: int = 1


def tome_reducer(config: ToMeConfig):
    def reduce(state: BlockState):
        return merge_pairs(state, config.r or max(1, round(config.ratio * state.patches)))

    return reduce


@register_method(
    "tok.tome",
    ToMeConfig,
    category="token-reduction",
    families=("vision",),
    changes=("outputs",),
    paper="Token Merging: Your ViT But Faster (ToMe; the peer method the token reducers are judged against)",
    arxiv="2210.09461",
    lossless=False,
)
class TokenMerging(Method):
    order = 60  # after weight transforms (int8 linears run inside the merged blocks)
    composes_with = frozenset({"baseline", "quant.int8_dynamic"}) | TOKEN_METHODS

    def supports(self, bundle, device):
        return requires_vit(bundle)

    def apply(self, bundle, config):
        model = token_model(bundle, tome_reducer(config))
        return default_runner(bundle, model, {"tome_r": config.r, "tome_ratio": config.ratio})
