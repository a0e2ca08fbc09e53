"""`baseline`: the un-accelerated model under its family's plain runner (KV-cache decoding for
an LM, one forward per batch for an encoder, …).

Every speed-up of a kind whose reference it is divides by this runner's latency measured in
the same process (DESIGN.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families import default_runner
from executors.registry import Method, MethodConfig, register_method


@dataclass(frozen=True)
class BaselineConfig(MethodConfig):
    version: int = 1


@register_method(
    "baseline",
    BaselineConfig,
    category="reference",
    families=("*",),
    changes=(),
    paper="The un-accelerated model under its family's plain runner (the reference)",
    lossless=True,
)
class Baseline(Method):
    order = 100  # a decoding strategy: applies after weight transforms and compilation
    composes_with = frozenset({"quant.int8_dynamic", "quant.weight_only_int4", "sys.compile"})

    def apply(self, bundle, config):
        return default_runner(bundle, bundle.model)
