"""`train.optim.exadam`: EXAdam (Adly, 2024, arXiv 2412.20302).

Three changes to Adam, as in the paper's algorithm: cross-moment debiasing — each moment's bias
correction is scaled by a factor built from the other moment, d₁ = 1 + v/(v + ε)·β₂ᵗ for m and
d₂ = 1 + m²/(m² + ε)·β₁ᵗ for v; a gradient acceleration term — the current gradient, debiased
like m, is added to the numerator (m̃ + g̃); and a step size that keeps growing,
α_t = α·ln(√2·√(t + 1)). Weight decay is decoupled, applied first, as in the authors' code.
With the reference's cosine on top, the growing step is a multiplier on the schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from executors.families.training.engine import Plan, trainer
from executors.registry import Method, MethodConfig, bounded, register_method


class EXAdam(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        growing_step: bool = True,
    ):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "growing_step": growing_step}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps = group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["step"] += 1
                m, v, t, g = state["m"], state["v"], state["step"], p.grad
                alpha = group["lr"] * (math.log(math.sqrt(2) * math.sqrt(t + 1)) if group["growing_step"] else 1.0)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                d1 = 1 + v / (v + eps) * beta2**t
                d2 = 1 + m * m / (m * m + eps) * beta1**t
                m_tilde = m / (1 - beta1**t) * d1
                g_tilde = g / (1 - beta1**t) * d1
                v_tilde = v / (1 - beta2**t) * d2
                p.addcdiv_(m_tilde + g_tilde, v_tilde.sqrt_().add_(eps), value=-alpha)
        return None


@dataclass(frozen=True)
class EXAdamConfig(MethodConfig):
    growing_step: bool = True
    eps: float = bounded(1e-8, 1e-12, 1e-3)
    version: int = 1


@register_method(
    "train.optim.exadam",
    EXAdamConfig,
    category="optimizer",
    families=("training",),
    changes=("outputs",),
    paper="EXAdam: The Power of Adaptive Cross-Moments",
    arxiv="2412.20302",
    catalogue_row=48,
    phase="training",
)
class EXAdamMethod(Method):
    def apply(self, bundle, config):
        def make(groups, schedule):
            return EXAdam(groups, schedule.lr, schedule.betas, config.eps, schedule.weight_decay, config.growing_step)

        return trainer(bundle, config, Plan("exadam", optimizer=make, notes={"growing_step": config.growing_step}))
