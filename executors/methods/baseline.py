"""`baseline`: the un-accelerated model with plain KV-cache decoding.

Every speed-up divides by this runner's latency measured in the same process (DESIGN.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.decoding import PlainDecoder
from executors.registry import Method, MethodConfig, register_method


@dataclass(frozen=True)
class BaselineConfig(MethodConfig):
    version: int = 1


@register_method(
    "baseline",
    BaselineConfig,
    family="reference",
    paper="Autoregressive decoding with a key-value cache (the reference)",
    lossless=True,
)
class Baseline(Method):
    order = 100  # a decoding strategy: applies after weight transforms and compilation
    composes_with = frozenset({"quant.int8_dynamic", "quant.weight_only_int4", "sys.compile"})

    def apply(self, bundle, config, calibration):
        return PlainDecoder(bundle.model)
