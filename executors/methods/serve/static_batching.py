"""`serve.static_batching`: request-level batching, the reference of every serving method.

A batch is formed from the requests waiting when the engine is empty and runs until its last
request finishes; whatever arrives meanwhile waits for the next batch. Stream speed-ups divide
by this method's throughput measured in the same process (executors/stream_harness.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.lm import DecoderLM
from executors.registry import Method, MethodConfig, register_method
from executors.serving import ServingRunner, with_options
from executors.speculative import decoder_of


@dataclass(frozen=True)
class StaticBatchingConfig(MethodConfig):
    block_size: int = 16  # KV block size of the paged cache (the same engine serves every method)
    version: int = 1


class ServingMethod(Method):
    """What the serving methods share: one engine, options that stack within a composite."""

    order = 200  # scheduling sits on top of any model transform
    requirements = {"workload": "lm-stream"}

    def supports(self, bundle, device):
        if not isinstance(decoder_of(getattr(bundle.model, "lm", bundle.model)), DecoderLM):
            return f"the serving engine runs an executors.lm.DecoderLM, not {type(bundle.model).__name__}"
        return None


@register_method(
    "serve.static_batching",
    StaticBatchingConfig,
    family="serving",
    paper="Static (request-level) batching: the serving reference of MetaInf's candidates",
    catalogue_row=52,
    lossless=True,
)
class StaticBatching(ServingMethod):
    def apply(self, bundle, config, calibration):
        return ServingRunner(with_options(bundle.model, continuous=False, block_size=config.block_size))
