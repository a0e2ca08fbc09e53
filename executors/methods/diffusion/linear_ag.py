"""`diff.guidance.linear_ag`: LinearAG (Castillo et al., arXiv 2312.12487, catalogue row 5).

The AG paper's second finding: where guidance cannot be dropped yet, whole unconditional
evaluations can be replaced by an affine combination of score estimates the sampler already
has. Here, at every `every`-th step, a sample's unconditional prediction is estimated as
a·ε_c(t) + b·ε_c(t_prev) + c·ε_u(t_prev) + d, with (a, b, c, d) per step fitted by least squares on
`fit_samples` full-guidance trajectories of the same schedule (cached per sampling settings);
the other steps evaluate it, and AG's per-sample truncation ends guidance once converged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from executors.families import default_runner
from executors.families.diffusion.sampler import Run, uniform_timesteps
from executors.methods.diffusion.adaptive_guidance import TruncatedGuidance
from executors.methods.diffusion.engine import (
    PerSchedule,
    base_of,
    needs_guidance,
    note_artefact,
    reference_trajectory,
    settings_of,
)
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class LinearAGConfig(MethodConfig):
    every: int = bounded(2, 2, 10)  # estimate the unconditional prediction at one step in `every`
    threshold: float = bounded(0.99, 0.0, 1.0)  # AG's γ̄ for the truncation that follows
    fit_samples: int = bounded(16, 2, 512)
    seed: int = 0
    version: int = 1


def fit_coefficients(model, settings, timesteps, config: LinearAGConfig) -> tuple[dict, dict]:
    """Least-squares (a, b, c, d) per step: ε_u(k) ≈ a ε_c(k) + b ε_c(k−1) + c ε_u(k−1) + d."""
    labels = torch.arange(config.fit_samples) % model.info.classes
    explicit = None if timesteps == uniform_timesteps(settings.scheduler, settings.steps) else timesteps
    path = reference_trajectory(model, labels, settings, config.seed, explicit)
    coef = torch.zeros(len(path.timesteps), 4)
    residual = []
    for k in range(1, len(path.timesteps)):
        columns = [path.cond[k], path.cond[k - 1], path.uncond[k - 1], torch.ones_like(path.cond[k])]
        design = torch.stack([c.flatten() for c in columns], dim=1).double()
        target = path.uncond[k].flatten().double()
        solution = torch.linalg.lstsq(design, target).solution
        coef[k] = solution.float()
        residual.append(((design @ solution - target).pow(2).mean() / target.pow(2).mean()).item())
    return {"coef": coef}, {"relative_residual_mean": round(sum(residual) / max(1, len(residual)), 5)}


class LinearGuidance(TruncatedGuidance):
    def __init__(self, run: Run, config: LinearAGConfig, coef: torch.Tensor):
        super().__init__(run, config.threshold)
        self.every, self.coef = config.every, coef
        self.last_cond: torch.Tensor | None = None
        self.last_uncond: torch.Tensor | None = None
        self.estimated = 0

    def estimates(self, step: int) -> bool:
        return step > 0 and step % self.every == 1 and self.last_cond is not None

    def estimate(self, step: int, cond: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        a, b, c, d = self.coef[step].tolist()
        self.estimated += len(rows)
        self.run.stats["uncond_estimated"] = self.estimated
        return a * cond[rows] + b * self.last_cond[rows] + c * self.last_uncond[rows] + d  # type: ignore[index]

    def observe(self, step: int, cond: torch.Tensor, uncond: torch.Tensor, rows: torch.Tensor) -> None:
        if self.last_uncond is None:
            self.last_uncond = torch.zeros_like(cond)
        self.last_uncond[rows] = uncond
        self.last_cond = cond


class LinearAGPolicy:
    def __init__(self, config: LinearAGConfig):
        self.config = config
        key = {"every": config.every, "fit_samples": config.fit_samples, "seed": config.seed, "version": 1}
        self.fits = PerSchedule("diffusion-linear-ag", key, self._fit)
        self._timesteps: dict = {}

    def _fit(self, model, settings):
        return fit_coefficients(model, settings, self._timesteps[settings], self.config)

    def requirement(self, settings):
        return needs_guidance(settings, "LinearAG")

    def start(self, run: Run) -> LinearGuidance:
        settings = settings_of(run)
        self._timesteps[settings] = run.timesteps
        cached = self.fits.get(run.base, settings)
        run.stats["linear_ag_fit_residual"] = cached.meta.get("relative_residual_mean")
        note_artefact(run, "linear_ag_fit", cached)
        return LinearGuidance(run, self.config, cached.tensors["coef"])


@register_method(
    "diff.guidance.linear_ag",
    LinearAGConfig,
    category="sampling",
    families=("diffusion",),
    changes=("outputs", "forward_passes"),
    paper="Adaptive Guidance: Training-free Acceleration of Conditional Diffusion Models (LinearAG)",
    arxiv="2312.12487",
    catalogue_row=5,
)
class LinearAG(Method):
    order = 40
    composes_with = frozenset({"diff.cache.static", "quant.ptq.diffusion_timestep_calib", "quant.int8_dynamic"})

    def supports(self, bundle, device):
        return None if "class_conditional" in bundle.capabilities else "needs a class-conditional denoiser"

    def apply(self, bundle, config):
        return default_runner(bundle, base_of(bundle.model).with_plan(guidance=LinearAGPolicy(config)))
