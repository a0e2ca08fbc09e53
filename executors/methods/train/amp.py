"""`train.precision.amp`: automatic mixed precision (Micikevicius et al., "Mixed Precision
Training", ICLR 2018) — the forward pass under autocast in bfloat16 or float16, the master
weights, gradients and optimizer state in float32, the loss reduced in float32.

Autocast runs matrix multiplies and convolutions in the low precision, so what autograd keeps
for backward (their inputs) is stored at 2 bytes a value: the saved-activation bytes fall, the
weights' do not. float16 has a narrow exponent, so its gradients are protected by the paper's
loss scaling: the loss is multiplied by a scale before backward, every gradient divided by it
as it arrives (before clipping sees it), a step whose gradients overflow is skipped and the
scale halved, and the scale doubled after `growth_interval` clean steps. bfloat16 has float32's
exponent and needs none. On a CPU without bfloat16 matrix units autocast is usually slower, not
faster: the memory figure is the one that carries over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from executors.families.training.engine import Plan, trainer
from executors.families.training.tasks import cross_entropy
from executors.registry import Method, MethodConfig, bounded, register_method

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class LossScale:
    """The dynamic loss scale of one run (float16 only)."""

    def __init__(self, initial: float, growth_interval: int):
        self.value, self.growth_interval, self.clean_steps, self.skipped = initial, growth_interval, 0, 0

    def unscale_as_they_arrive(self, model: nn.Module) -> nn.Module:
        def unscale(param: torch.Tensor) -> None:
            assert param.grad is not None
            param.grad.div_(self.value)

        for p in model.parameters():
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(unscale)
        return model


class ScaledStep(torch.optim.AdamW):
    """AdamW that skips a step whose (unscaled) gradients overflowed and adapts the loss scale."""

    def __init__(self, groups, scale: LossScale, **options):
        super().__init__(groups, **options)
        self.scale = scale

    @torch.no_grad()
    def step(self, closure=None):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not all(torch.isfinite(g).all() for g in grads):
            self.scale.value, self.scale.clean_steps = self.scale.value / 2, 0
            self.scale.skipped += 1
            return None
        self.scale.clean_steps += 1
        if self.scale.clean_steps % self.scale.growth_interval == 0:
            self.scale.value *= 2
        return super().step()


@dataclass(frozen=True)
class AmpConfig(MethodConfig):
    dtype: Literal["bfloat16", "float16"] = "bfloat16"
    initial_scale: float = bounded(2.0**12, 1.0, 2.0**24)  # float16's loss scale
    growth_interval: int = bounded(50, 1, 100_000)
    version: int = 1


@register_method(
    "train.precision.amp",
    AmpConfig,
    category="precision",
    families=("training",),
    changes=("outputs", "train_memory"),
    paper="Mixed Precision Training",
    arxiv="1710.03740",
    catalogue_row=55,
    phase="training",
)
class Amp(Method):
    def apply(self, bundle, config):
        dtype = DTYPES[config.dtype]
        device = next(bundle.model.parameters()).device.type
        scales: list[LossScale] = []  # one per run: a fresh model makes a fresh scale

        def fresh(model: nn.Module, task) -> nn.Module:
            if config.dtype != "float16":
                return model
            scales.append(LossScale(config.initial_scale, config.growth_interval))
            return scales[-1].unscale_as_they_arrive(model)

        def loss(task, model, batch) -> torch.Tensor:
            with torch.autocast(device, dtype=dtype):
                value = cross_entropy(task, model, batch)  # the logits are cast to float32 inside
            return value * scales[-1].value if config.dtype == "float16" else value

        def make(groups, schedule):
            options = {"lr": schedule.lr, "betas": schedule.betas, "weight_decay": schedule.weight_decay}
            if config.dtype == "float16":
                return ScaledStep(groups, scales[-1], **options)
            return torch.optim.AdamW(groups, **options)

        plan = Plan("AMP", optimizer=make, loss=loss, model=fresh, notes={"dtype": config.dtype})
        return trainer(bundle, config, plan)
