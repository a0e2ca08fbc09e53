"""`serve.prefix_caching`: reuse of KV blocks for shared prompt prefixes (vLLM APC, SGLang).

The KV cache is paged into blocks. A full block is keyed by a hash chain over every token up to
its end (vLLM's automatic prefix caching; a radix tree over token blocks in SGLang's
RadixAttention), so equal keys mean equal prefixes and thus equal keys/values. A new request
takes the longest run of cached blocks of its prompt and computes only the rest (at least one
token, for its first logits). Released blocks stay cached until the pool needs them (LRU).
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.methods.serve.engine import ServingRunner, with_options
from executors.methods.serve.static_batching import ServingMethod
from executors.registry import MethodConfig, bounded, register_method


@dataclass(frozen=True)
class PrefixCachingConfig(MethodConfig):
    block_size: int = bounded(16, 1, 256)  # the reuse granularity: only whole blocks are shared
    cache_blocks: int = bounded(256, 0, 65_536)  # blocks kept for released prefixes beyond the running requests'
    version: int = 1


@register_method(
    "serve.prefix_caching",
    PrefixCachingConfig,
    category="serving",
    families=("stream",),
    changes=("schedule",),
    paper="Efficient Memory Management for Large Language Model Serving with PagedAttention "
    "(vLLM, automatic prefix caching); SGLang RadixAttention (arXiv 2312.07104)",
    arxiv="2309.06180",
    catalogue_row=52,
    lossless=True,
)
class PrefixCaching(ServingMethod):
    composes_with = frozenset({"serve.continuous_batching", "serve.chunked_prefill"})

    def apply(self, bundle, config):
        return ServingRunner(
            with_options(
                bundle.model, prefix_caching=True, block_size=config.block_size, cache_blocks=config.cache_blocks
            )
        )
