"""`serve.static_batching`: request-level batching, the reference of every serving method.

A batch is formed from the requests waiting when the engine is empty and runs until its last
request finishes; whatever arrives meanwhile waits for the next batch. Stream speed-ups divide
by this method's throughput measured in the same process (executors/families/stream/harness.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.methods.serve.engine import ServingRunner, with_options
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class StaticBatchingConfig(MethodConfig):
    block_size: int = bounded(16, 1, 256)  # KV block size of the paged cache (the same engine serves every method)
    version: int = 1


class ServingMethod(Method):
    """What the serving methods share: one engine, options that stack within a composite."""

    order = 200  # scheduling sits on top of any model transform

    def supports(self, bundle, device):
        if "kv_cache" not in bundle.capabilities:
            return "the serving engine pages an LM's KV cache (executors.families.lm); this model has none"
        if "llama_layout" not in bundle.capabilities:  # it re-runs the layers with plain RoPE over the whole context
            return "the serving engine computes the plain Llama layout; this decoder's positions or window differ"
        return None


@register_method(
    "serve.static_batching",
    StaticBatchingConfig,
    category="serving",
    families=("stream",),
    changes=(),
    paper="Static (request-level) batching: the serving reference of MetaInf's candidates",
    catalogue_row=52,
    lossless=True,
)
class StaticBatching(ServingMethod):
    def apply(self, bundle, config):
        return ServingRunner(with_options(bundle.model, continuous=False, block_size=config.block_size))
