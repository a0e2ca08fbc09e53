"""`diff.guidance.adaptive`: Adaptive Guidance (Castillo et al., arXiv 2312.12487, catalogue row 5).

Classifier-free guidance evaluates the network twice per step (conditional and unconditional).
AG observes that the guided update becomes aligned with the plain conditional one as denoising
proceeds: per sample, once the cosine similarity γ_t between the conditional and the
unconditional predictions exceeds γ̄ (`threshold`) — the two branches agree, so guidance adds
nothing — every later step of that sample uses the conditional prediction alone, saving its
unconditional evaluations. Samples of a batch truncate
independently; the still-guided ones share one batched evaluation with the conditional rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from executors.families import default_runner
from executors.families.diffusion.sampler import Run, combine
from executors.methods.diffusion.engine import base_of, cosine, needs_guidance
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class AdaptiveGuidanceConfig(MethodConfig):
    threshold: float = bounded(0.99, 0.0, 1.0)  # γ̄: cos(ε_cond, ε_uncond) above which guidance stops
    version: int = 2  # 2: the paper's criterion, cos(ε_cond, ε_uncond)


class TruncatedGuidance:
    """Per-sample CFG until convergence, then conditional steps; `estimate` may stand in for some uncond passes."""

    def __init__(self, run: Run, threshold: float):
        self.run, self.threshold = run, threshold
        self.active = torch.ones(run.batch, dtype=torch.bool)
        self.stopped_at = torch.full((run.batch,), len(run.timesteps), dtype=torch.long)

    def estimates(self, step: int) -> bool:
        """Whether this step's unconditional predictions come from earlier ones instead of the network (LinearAG)."""
        return False

    def estimate(self, step: int, cond: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, step: int, t: int, x: torch.Tensor) -> torch.Tensor:
        run = self.run
        rows = self.active.nonzero().flatten()
        if len(rows) == 0:
            return run.evaluate(x, t, run.labels, run.cond_rows, step)
        if self.estimates(step):
            cond = run.evaluate(x, t, run.labels, run.cond_rows, step)
            uncond = self.estimate(step, cond, rows)
        else:
            both = run.evaluate(torch.cat([x, x[rows]]), t, torch.cat([run.labels, run.null[rows]]),
                                torch.cat([run.cond_rows, run.uncond_rows[rows]]), step)  # fmt: skip
            cond, uncond = both[: run.batch], both[run.batch :]
        self.observe(step, cond, uncond, rows)
        guided = combine(cond[rows], uncond, run.settings.guidance_scale)
        out = cond.clone()
        out[rows] = guided
        converged = rows[cosine(cond[rows], uncond) > self.threshold]
        self.active[converged] = False
        self.stopped_at[converged] = step + 1
        run.stats["guided_steps_mean"] = round(self.stopped_at.float().mean().item(), 2)
        return out

    def observe(self, step: int, cond: torch.Tensor, uncond: torch.Tensor, rows: torch.Tensor) -> None:
        """A subclass keeps the predictions it estimates from (LinearAG)."""


@dataclass(frozen=True)
class AdaptiveGuidancePolicy:
    threshold: float

    def requirement(self, settings):
        return needs_guidance(settings, "adaptive guidance")

    def start(self, run: Run) -> TruncatedGuidance:
        return TruncatedGuidance(run, self.threshold)


@register_method(
    "diff.guidance.adaptive",
    AdaptiveGuidanceConfig,
    category="sampling",
    families=("diffusion",),
    changes=("outputs", "forward_passes"),
    paper="Adaptive Guidance: Training-free Acceleration of Conditional Diffusion Models",
    arxiv="2312.12487",
    catalogue_row=5,
)
class AdaptiveGuidance(Method):
    order = 40  # a guidance policy: after the solver, before compilation
    composes_with = frozenset({"diff.cache.static", "diff.cache.harmonica_router", "quant.ptq.diffusion_timestep_calib",
                               "quant.int8_dynamic"})  # fmt: skip

    def supports(self, bundle, device):
        return None if "class_conditional" in bundle.capabilities else "needs a class-conditional denoiser"

    def apply(self, bundle, config):
        policy = AdaptiveGuidancePolicy(config.threshold)
        return default_runner(bundle, base_of(bundle.model).with_plan(guidance=policy))
