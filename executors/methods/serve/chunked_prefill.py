"""`serve.chunked_prefill`: Sarathi's chunked prefills with decode-maximal batching.

Every iteration has a token budget (`chunk_size`). The running requests' decode tokens are
scheduled first, then prefill tokens fill the rest of the budget, so a long prompt is split
into chunks that each ride along with the other requests' decodes instead of stalling them for
a whole prefill (Sarathi-Serve's stall-free batching). Each chunk attends causally to the keys
and values of the chunks before it, so the result equals an unsplit prefill.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.methods.serve.engine import ServingRunner, with_options
from executors.methods.serve.static_batching import ServingMethod
from executors.registry import MethodConfig, bounded, register_method


@dataclass(frozen=True)
class ChunkedPrefillConfig(MethodConfig):
    chunk_size: int = bounded(64, 1, 8192)  # tokens per iteration, decodes included
    version: int = 1


@register_method(
    "serve.chunked_prefill",
    ChunkedPrefillConfig,
    category="serving",
    families=("stream",),
    changes=("schedule",),
    paper="SARATHI: Efficient LLM Inference by Piggybacking Decodes with Chunked Prefills; "
    "Sarathi-Serve (arXiv 2403.02310)",
    arxiv="2308.16369",
    catalogue_row=52,
    lossless=True,
)
class ChunkedPrefill(ServingMethod):
    composes_with = frozenset({"serve.continuous_batching", "serve.prefix_caching"})

    def apply(self, bundle, config):
        if config.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        return ServingRunner(with_options(bundle.model, chunk_size=config.chunk_size))
