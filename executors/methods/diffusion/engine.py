"""What several diffusion methods share: reference trajectories, per-schedule artefacts, guidance helpers.

Methods that learn or search something for a sampling schedule (LinearAG's coefficients,
HarmoniCa's router, AutoDiffusion's step subset) do it on the first call with a given
(steps, guidance scale, scheduler) and cache the result as safetensors
(`executors/caching.py`), keyed by the model's weights, the method's config and those
settings; the protocol counts that first call's excess as setup, never as steady state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from executors.caching import Cached, cached_tensors
from executors.families.diffusion.sampler import DiffusionModel, Run, Settings, Stepper, combine, guided_eps
from executors.registry import unwrap


def base_of(model) -> DiffusionModel:
    return unwrap(model)  # type: ignore[return-value]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine similarity of two batches of predictions."""
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def needs_guidance(settings: Settings, method: str) -> str | None:
    if settings.guided:
        return None
    return f"{method} changes classifier-free guidance; this workload samples without it (guidance scale ≤ 1)"


@dataclass
class Trajectory:
    """A plain guided DDIM-family run: the input of every step and both predictions at it."""

    timesteps: list[int]
    inputs: list[torch.Tensor]  # x at each step
    cond: list[torch.Tensor]
    uncond: list[torch.Tensor]
    final: torch.Tensor


@torch.inference_mode()
def reference_trajectory(model: DiffusionModel, labels: torch.Tensor, settings: Settings, seed: int,
                         timesteps: list[int] | None = None) -> Trajectory:  # fmt: skip
    """Runs full classifier-free guidance with the plain plan of `model`'s denoiser, recording each step."""
    plain = model.with_plan(**{f.name: None for f in dataclasses.fields(model.plan)})
    stepper = Stepper(settings.scheduler, settings.steps, timesteps)
    generator = torch.Generator().manual_seed(seed)
    info = model.info
    x = torch.randn((len(labels), info.channels, info.resolution, info.resolution), generator=generator)
    run = Run(plain, labels, settings, settings.scheduler, stepper.timesteps)
    record = Trajectory(stepper.timesteps, [], [], [], x)
    for index, t in enumerate(stepper.timesteps):
        cond, uncond = guided_eps(run, x, t, index)
        record.inputs.append(x)
        record.cond.append(cond)
        record.uncond.append(uncond)
        x = stepper.step(combine(cond, uncond, settings.guidance_scale), index, x, generator)
    record.final = x.clamp(-1, 1)
    return record


class PerSchedule:
    """An artefact built once per sampling settings (in memory, and on disk through the cache)."""

    def __init__(self, kind: str, config: dict, build: Callable[[DiffusionModel, Settings], tuple[dict, dict]]):
        self.kind, self.config, self.build = kind, config, build
        self.memo: dict[Settings, Cached] = {}

    def get(self, model: DiffusionModel, settings: Settings) -> Cached:
        if settings not in self.memo:
            key = {**self.config, "settings": dataclasses.asdict(settings)}
            with torch.inference_mode(False):
                self.memo[settings] = cached_tensors(self.kind, model.net, key, lambda: self.build(model, settings))
        return self.memo[settings]


def note_artefact(run: Run, name: str, cached: Cached) -> None:
    """The run says what its artefact cost when it was built (a cache hit costs nothing now)."""
    run.stats[f"{name}_build_s"] = round(cached.build_s, 2)
    run.stats[f"{name}_cached"] = cached.hit


def settings_of(run: Run) -> Settings:
    """The settings a run actually samples with (a plan may have changed its solver and step count)."""
    return Settings(len(run.timesteps), run.settings.guidance_scale, run.solver)
