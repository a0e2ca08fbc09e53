"""`train.schedule.rewarm`: re-warming for continual pre-training (Gupta et al., "Continual
Pre-Training of Large Language Models: How to (re)warm your model?", 2023).

A continuation that simply decays from where it is (the reference) adapts slowly to the new
domain. The paper re-warms: a linear warm-up from the pre-training's final rate back to a peak
— the pre-training's own maximum — then a cosine decay to a floor of 0.1 × the peak. Re-warming
raises the loss at first and lowers it on the new domain later, at some cost upstream (the
record keeps the upstream metric). The paper finds the warm-up's length matters little; at a
budget of ~100 steps its 1 % would be a single step, so the default is 10 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from executors.families.training.engine import Plan, trainer
from executors.registry import Method, MethodConfig, bounded, register_method


def rewarm_schedule(warmup_fraction: float, floor: float):
    def factor(step: int, budget: int, _warmup: int) -> float:
        warm = max(1, round(warmup_fraction * budget))
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, budget - warm)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@dataclass(frozen=True)
class RewarmConfig(MethodConfig):
    warmup_fraction: float = bounded(0.1, 0.0, 0.5)
    peak_scale: float = bounded(3.0, 0.1, 100.0)  # the pre-training's peak rate over the continuation's
    floor: float = bounded(0.1, 0.0, 1.0)  # η_min / η_max
    version: int = 1


@register_method(
    "train.schedule.rewarm",
    RewarmConfig,
    category="schedule",
    families=("training",),
    changes=("outputs", "schedule"),
    paper="Continual Pre-Training of Large Language Models: How to (re)warm your model?",
    arxiv="2308.04014",
    catalogue_row=43,
    phase="training",
)
class Rewarm(Method):
    def supports(self, bundle, device):
        if "pretrained_start" not in bundle.capabilities:
            return "re-warming continues a pre-trained model; this recipe trains from scratch"
        return None

    def apply(self, bundle, config):
        plan = Plan(
            "re-warming",
            schedule=rewarm_schedule(config.warmup_fraction, config.floor),
            lr_scale=config.peak_scale,
            notes={"warmup_fraction": config.warmup_fraction, "peak_scale": config.peak_scale, "floor": config.floor},
        )
        return trainer(bundle, config, plan)
