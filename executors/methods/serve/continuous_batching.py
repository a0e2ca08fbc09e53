"""`serve.continuous_batching`: Orca's iteration-level scheduling.

The scheduler decides at every iteration (one forward) which requests run: waiting requests
join free slots as soon as they arrive, a finished request leaves at once and returns its KV
blocks. Prefill tokens of new requests and decode tokens of running ones share one packed
forward (Orca's selective batching). Without chunked prefill a new prompt's whole prefill runs
in one iteration, which stalls the decodes batched with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.methods.serve.engine import ServingRunner, with_options
from executors.methods.serve.static_batching import ServingMethod
from executors.registry import MethodConfig, register_method


@dataclass(frozen=True)
class ContinuousBatchingConfig(MethodConfig):
    version: int = 1


@register_method(
    "serve.continuous_batching",
    ContinuousBatchingConfig,
    category="serving",
    families=("stream",),
    changes=("schedule",),
    paper="Orca: A Distributed Serving System for Transformer-Based Generative Models "
    "(OSDI 2022), iteration-level scheduling",
    catalogue_row=52,
    lossless=True,
)
class ContinuousBatching(ServingMethod):
    composes_with = frozenset({"serve.prefix_caching", "serve.chunked_prefill"})

    def apply(self, bundle, config):
        return ServingRunner(with_options(bundle.model, continuous=True))
