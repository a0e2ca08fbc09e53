"""`diff.cache.static`: a static cache of deep features reused across steps (DeepCache-style).

DeepCache (Ma et al., arXiv 2312.00858) observes that a UNet's high-level features change little
between adjacent denoising steps: it runs the full network once every `interval` steps and, in
between, only the shallow skip branch — the outer `branch` levels — taking the deep branch's
output (the input of up block −branch) from the last full step. On a DiT the same schedule
reuses the residual contribution of the middle blocks, keeping `branch` blocks at each end fresh
(the block-reuse form used for transformers, e.g. FORA / Δ-DiT). The schedule is fixed: it is the
peer a user would try before a learned cache (`diff.cache.harmonica_router`).
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families import default_runner
from executors.families.diffusion.sampler import Run
from executors.methods.diffusion.engine import base_of
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class StaticCacheConfig(MethodConfig):
    interval: int = bounded(3, 2, 50)  # one full evaluation every `interval` steps
    branch: int = bounded(1, 1, 8)  # UNet: outer levels computed; DiT: blocks computed at each end
    version: int = 1


def cached_units(denoiser, branch: int) -> frozenset[int]:
    if denoiser.architecture == "diffusion-dit":
        units = frozenset(range(branch, denoiser.units - branch))
        if not units:
            raise ValueError(f"a {denoiser.units}-block DiT keeps {branch} fresh at each end: nothing is left to cache")
        return units
    if not 1 <= branch < denoiser.units:
        raise ValueError(f"branch {branch} is outside this UNet's skip levels 1…{denoiser.units - 1}")
    return frozenset({branch})


class StaticSchedule:
    def __init__(self, run: Run, units: frozenset[int], interval: int):
        self.units, self.interval = units, interval
        self.reused = 0
        run.stats["cache_interval"] = interval

    def control(self, step: int, rows):
        if step % self.interval == 0:
            return frozenset(), self.units  # a full evaluation refreshes the cached units
        self.reused += 1
        return self.units, frozenset()


@dataclass(frozen=True)
class StaticCachePolicy:
    interval: int
    branch: int

    def start(self, run: Run) -> StaticSchedule:
        return StaticSchedule(run, cached_units(run.base.net, self.branch), self.interval)


@register_method(
    "diff.cache.static",
    StaticCacheConfig,
    category="feature-caching",
    families=("diffusion",),
    changes=("outputs", "forward_passes"),
    paper="DeepCache: Accelerating Diffusion Models for Free (a static reuse schedule; the peer of HarmoniCa)",
    arxiv="2312.00858",
    catalogue_row=9,
)
class StaticCache(Method):
    order = 20  # a model-level cache: after weight transforms, before the solver and guidance policies
    composes_with = frozenset({"diff.guidance.adaptive", "diff.guidance.linear_ag", "diff.steps.dpm_solver",
                               "quant.ptq.diffusion_timestep_calib", "quant.int8_dynamic"})  # fmt: skip

    def supports(self, bundle, device):
        return None if "feature_cache" in bundle.capabilities else "needs a denoiser whose units can be cached"

    def apply(self, bundle, config):
        model = base_of(bundle.model)
        cached_units(model.net, config.branch)  # a config the model cannot cache fails here, not mid-sampling
        return default_runner(bundle, model.with_plan(features=StaticCachePolicy(config.interval, config.branch)))
