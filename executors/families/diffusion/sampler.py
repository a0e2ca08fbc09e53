"""Sampling: the runner protocol (`sample`), diffusers' schedulers, classifier-free guidance, and
the plan a sampling method changes.

`DiffusionModel` (the bundle's model) is a denoiser plus a `SamplingPlan`: which solver and how
many steps, how guidance is applied, which features are cached, which units are dropped, what
the attention processors are told. The plain plan is the workload's scheduler at its step
count with classifier-free guidance (one batched cond + uncond evaluation per step) when the
guidance scale is above 1. A method returns the same denoiser under another plan (or a
transformed denoiser), so methods stack: a weight transform, then a cache, then a guidance
policy. Every policy is a small object with `start(run)`; the loop below asks it per step.

Counting: `nfe` is network evaluations per image (a guided step is two), `effective_nfe` the
same weighted by the share of each evaluation's multiply-accumulates actually computed (a
cached or shortened evaluation counts less).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch
from torch import nn

from executors.families.diffusion.networks import Control, Denoiser, FeatureCache, mac_profile, skipped_fraction
from executors.registry import unwrap

SCHEDULERS = ("ddim", "ddpm", "dpm-solver++")
TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class Settings:
    """What a workload asks of one sampling call."""

    steps: int
    guidance_scale: float
    scheduler: str = "ddim"

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    def schedule(self) -> tuple[int, float, str]:
        return (self.steps, self.guidance_scale, self.scheduler)


@dataclass(frozen=True)
class SamplingPlan:
    """What a sampling method changes; None everywhere is the plain sampler."""

    solver: str | None = None  # replaces the workload's scheduler
    max_steps: int | None = None  # at most this many steps
    schedule: Any = None  # .build(model, settings, solver) -> (timesteps, per-step dropped units)
    guidance: Any = None  # .start(run) -> state with .predict(step, t, x)
    features: Any = None  # .start(run) -> state with .control(step, rows) -> (reuse, store)
    attention: Any = None  # .start(run) -> state with .control(step) (what the attention processors read)

    def policies(self) -> list:
        return [p for p in (self.schedule, self.guidance, self.features, self.attention) if p is not None]

    def requirement(self, settings: Settings) -> str | None:
        """Why this plan cannot run these settings (e.g. a guidance policy without guidance)."""
        for policy in self.policies():
            why = policy.requirement(settings) if hasattr(policy, "requirement") else None
            if why:
                return why
        return None


@dataclass(frozen=True)
class ModelInfo:
    classes: int
    resolution: int
    channels: int
    dataset: str

    @property
    def null_class(self) -> int:
        return self.classes  # the label of the unconditional branch (dropped during training)


class DiffusionModel(nn.Module):
    """A class-conditional denoiser and the plan its sampler follows."""

    def __init__(self, net: Denoiser, info: ModelInfo, plan: SamplingPlan | None = None):
        super().__init__()
        self.net = net
        self.info = info
        self.plan = plan or SamplingPlan()
        self._macs: dict[str, int] | None = None

    def forward(self, x, t, labels, control: Control | None = None):
        return self.net(x, t, labels, control)

    def with_plan(self, **changes) -> DiffusionModel:
        """The same denoiser (shared weights) under a changed plan."""
        clone = copy.copy(self)
        clone.__dict__["_modules"] = dict(self._modules)
        clone.plan = replace(self.plan, **changes)
        return clone

    def with_net(self, net: Denoiser) -> DiffusionModel:
        return DiffusionModel(net, self.info, self.plan)

    @property
    def macs(self) -> dict[str, int]:
        if self._macs is None:
            self._macs = mac_profile(self.net, self.info.resolution, self.info.channels)
        return self._macs


def diffusion_model(model: nn.Module) -> DiffusionModel:
    """The DiffusionModel under a (possibly compiled) model."""
    return cast(DiffusionModel, unwrap(model))


def make_scheduler(name: str):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler  # imports transformers: lazily

    common = {"num_train_timesteps": TRAIN_TIMESTEPS, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=True)
    if name == "ddpm":
        return DDPMScheduler(**common, clip_sample=True)
    if name == "dpm-solver++":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}")


def uniform_timesteps(name: str, steps: int) -> list[int]:
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def ddim_step(alphas_cumprod: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, x: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM (η = 0, x0 clipped to [-1, 1]) between any two timesteps; t_prev < 0 is the end."""
    alpha = alphas_cumprod[t]
    alpha_prev = alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
    x0 = ((x - (1 - alpha).sqrt() * eps) / alpha.sqrt()).clamp(-1, 1)
    return alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * eps


class Stepper:
    """One call's scheduler over its timesteps (diffusers' own, or DDIM over a searched sequence)."""

    def __init__(self, name: str, steps: int, timesteps: list[int] | None = None):
        self.name, self.scheduler = name, make_scheduler(name)
        self.custom = timesteps is not None and name == "ddim"
        if timesteps is None:
            self.scheduler.set_timesteps(steps)
        elif not self.custom:
            self.scheduler.set_timesteps(timesteps=list(timesteps))
        self.timesteps = list(timesteps) if timesteps is not None else [int(t) for t in self.scheduler.timesteps]

    def step(self, eps: torch.Tensor, index: int, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        t = self.timesteps[index]
        if self.custom:
            t_prev = self.timesteps[index + 1] if index + 1 < len(self.timesteps) else -1
            return ddim_step(self.scheduler.alphas_cumprod, eps, t, t_prev, x)
        extra = {"generator": generator} if self.name == "ddpm" else {}
        return self.scheduler.step(eps, t, x, **extra).prev_sample


@dataclass
class Samples:
    images: torch.Tensor  # [B, C, R, R] in [-1, 1]
    nfe: float  # network evaluations per image
    effective_nfe: float  # evaluations weighted by the share of MACs computed
    stats: dict = field(default_factory=dict)


class Run:
    """One sampling call: its inputs, the cache, and what it evaluated."""

    def __init__(self, model: nn.Module, labels: torch.Tensor, settings: Settings, solver: str, timesteps: list[int],
                 skips=None):  # fmt: skip
        self.model = model  # what is called (possibly compiled)
        self.base = diffusion_model(model)
        self.plan, self.settings, self.timesteps, self.skips = self.base.plan, settings, timesteps, skips
        self.solver = solver
        self.labels = labels
        self.batch = len(labels)
        self.null = torch.full_like(labels, self.base.info.null_class)
        self.cond_rows = torch.arange(self.batch)
        self.uncond_rows = self.cond_rows + self.batch
        self.total_rows = 2 * self.batch
        self.cache = FeatureCache() if self.plan.features is not None else None
        self.evaluations = 0.0
        self.computed = 0.0
        self.stats: dict = {}
        for policy in self.plan.policies():  # a policy that prepared something says what it cost
            if hasattr(policy, "note"):
                policy.note(self)
        self.features = self.plan.features.start(self) if self.plan.features is not None else None
        self.attention = self.plan.attention.start(self) if self.plan.attention is not None else None

    def evaluate(self, x, t: int, labels, rows: torch.Tensor, step: int, emb_offset=None) -> torch.Tensor:
        reuse, store = self.features.control(step, rows) if self.features is not None else (frozenset(), None)
        skip = self.skips[step] if self.skips is not None else frozenset()
        plain = not (reuse or skip or emb_offset is not None or self.cache is not None or self.attention is not None)
        control = None
        if not plain:
            attention = self.attention.control(step) if self.attention is not None else None
            control = Control(rows, self.total_rows, self.cache, frozenset(reuse), store, frozenset(skip),
                              emb_offset, attention)  # fmt: skip
        eps = self.model(x, torch.tensor(t), labels, control)
        saved = skipped_fraction(self.base.net, self.base.macs, set(reuse) | set(skip)) if reuse or skip else 0.0
        self.evaluations += len(rows)
        self.computed += len(rows) * (1 - saved)
        return eps


def guided_eps(run: Run, x: torch.Tensor, t: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditional, unconditional) predictions of one full CFG step, batched."""
    eps = run.evaluate(torch.cat([x, x]), t, torch.cat([run.labels, run.null]), torch.cat([run.cond_rows,
                       run.uncond_rows]), step)  # fmt: skip
    return eps[: run.batch], eps[run.batch :]


def combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    return uncond + scale * (cond - uncond)


class PlainGuidance:
    """Classifier-free guidance at every step (or the conditional model alone at scale ≤ 1)."""

    def __init__(self, run: Run):
        self.run = run

    def predict(self, step: int, t: int, x: torch.Tensor) -> torch.Tensor:
        run = self.run
        if not run.settings.guided:
            return run.evaluate(x, t, run.labels, run.cond_rows, step)
        cond, uncond = guided_eps(run, x, t, step)
        return combine(cond, uncond, run.settings.guidance_scale)


def timesteps_for(model: DiffusionModel, settings: Settings) -> tuple[str, list[int] | None, int, Any]:
    """(solver, explicit timesteps or None, step count, per-step dropped units or None) of the plan."""
    plan = model.plan
    solver = plan.solver or settings.scheduler
    steps = min(settings.steps, plan.max_steps) if plan.max_steps else settings.steps
    if plan.schedule is not None:
        timesteps, skips = plan.schedule.build(model, replace(settings, steps=steps), solver)
        return solver, list(timesteps), len(timesteps), skips
    return solver, None, steps, None


@torch.inference_mode()
def sample(model: nn.Module, labels: torch.Tensor, settings: Settings, seed: int) -> Samples:
    """Generates one image per label from seeded noise; the same seed gives the same start for every method."""
    base = diffusion_model(model)
    why = base.plan.requirement(settings)
    if why:
        raise ValueError(why)
    solver, explicit, steps, skips = timesteps_for(base, settings)
    stepper = Stepper(solver, steps, explicit)
    generator = torch.Generator().manual_seed(seed)
    info = base.info
    # The noise is drawn on the CPU, so every device starts every method from the same images.
    device = next(iter(base.parameters())).device
    x = torch.randn((len(labels), info.channels, info.resolution, info.resolution), generator=generator).to(device)
    labels = labels.to(device)
    run = Run(model, labels, settings, solver, stepper.timesteps, skips)
    guidance = base.plan.guidance.start(run) if base.plan.guidance is not None else PlainGuidance(run)
    for index, t in enumerate(stepper.timesteps):
        x = stepper.step(guidance.predict(index, t, x), index, x, generator)
    stats = {"steps": len(stepper.timesteps), "solver": solver, **run.stats}
    if run.cache is not None:
        stats["cache_bytes"] = run.cache.nbytes
    return Samples(x.clamp(-1, 1).cpu(), run.evaluations / run.batch, run.computed / run.batch, stats)


@dataclass
class Sampler:
    """The diffusion family's plain runner: `sample(labels, settings, seed)` under the model's plan."""

    model: nn.Module
    stats: dict = field(default_factory=dict)

    def sample(self, labels: torch.Tensor, settings: Settings, seed: int) -> Samples:
        return sample(self.model, labels, settings, seed)

    @property
    def extra_modules(self) -> tuple[nn.Module, ...]:
        """Trained modules a plan's policies hold beside the denoiser (a guidance adapter, a router)."""
        plan = diffusion_model(self.model).plan
        return tuple(m for p in plan.policies() for m in getattr(p, "modules", ()))
