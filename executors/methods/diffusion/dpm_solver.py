"""`diff.steps.dpm_solver`: fewer steps with DPM-Solver++ — the peer baseline a diffusion user tries first.

DPM-Solver++ (Lu et al., arXiv 2211.01095) solves the diffusion ODE in data-prediction form with
a second-order multistep update, which keeps guided sampling stable at 10–20 steps where DDIM
degrades. This method runs diffusers' `DPMSolverMultistepScheduler` (algorithm `dpmsolver++`,
order 2) for at most `steps` steps instead of the workload's scheduler and step count; the
seed methods below are judged against it on the same tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families import default_runner
from executors.methods.diffusion.engine import base_of
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class DPMSolverConfig(MethodConfig):
    steps: int = bounded(10, 1, 1000)  # at most this many solver steps (the workload's count when lower)
    version: int = 1


@register_method(
    "diff.steps.dpm_solver",
    DPMSolverConfig,
    category="sampling",
    families=("diffusion",),
    changes=("outputs", "forward_passes"),
    paper="DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models (diffusers' "
    "DPMSolverMultistepScheduler at fewer steps)",
    arxiv="2211.01095",
)
class DPMSolver(Method):
    order = 30  # a sampler strategy: after weight transforms and caches, before compilation
    composes_with = frozenset({"diff.guidance.adaptive", "diff.guidance.linear_ag", "diff.distill.speedupnet_adapter"})

    def supports(self, bundle, device):
        return None if "denoiser" in bundle.capabilities else "samples diffusion denoisers; this model is none"

    def apply(self, bundle, config):
        return default_runner(bundle, base_of(bundle.model).with_plan(solver="dpm-solver++", max_steps=config.steps))
