"""`train.optim.adabelief`: AdaBelief (Zhuang et al., NeurIPS 2020).

Adam's second moment is an EMA of g²; AdaBelief's is an EMA of (g − m)², the squared distance
of the gradient from its own prediction m: where the gradient agrees with the belief the step
is large, where it jumps around the step is small. As in the paper's Algorithm 2: ε is added
inside the EMA (s_t = β₂ s + (1 − β₂)(g − m)² + ε), both moments are bias-corrected, and the
weight decay is decoupled (AdamW-style), so only the denominator differs from the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from executors.families.training.engine import Plan, trainer
from executors.registry import Method, MethodConfig, bounded, register_method


class AdaBelief(torch.optim.Optimizer):
    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-16, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"], state["m"], state["s"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["step"] += 1
                m, s, t = state["m"], state["s"], state["step"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                s.mul_(beta2).addcmul_(p.grad - m, p.grad - m, value=1 - beta2).add_(group["eps"])
                denom = (s / (1 - beta2**t)).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - beta1**t))
        return None


@dataclass(frozen=True)
class AdaBeliefConfig(MethodConfig):
    eps: float = bounded(1e-16, 0.0, 1e-3)
    version: int = 1


@register_method(
    "train.optim.adabelief",
    AdaBeliefConfig,
    category="optimizer",
    families=("training",),
    changes=("outputs",),
    paper="AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients",
    arxiv="2010.07468",
    catalogue_row=54,
    phase="training",
)
class AdaBeliefMethod(Method):
    def apply(self, bundle, config):
        def make(groups, schedule):
            return AdaBelief(groups, schedule.lr, schedule.betas, config.eps, schedule.weight_decay)

        return trainer(bundle, config, Plan("adabelief", optimizer=make, notes={"eps": config.eps}))
