"""`train.largebatch.ghost_bn`: Ghost Batch Normalization with regime adaptation (Hoffer, Hubara
and Soudry, "Train longer, generalize better", NeurIPS 2017).

A large batch generalises worse because it makes too few, too smooth updates. The paper's regime
adaptation: normalise over small "ghost" batches inside the large one (the noise of small-batch
statistics, at large-batch throughput) and scale the learning rate with the square root of the
batch ratio, η ∝ √(B / B_small). Its third part — more iterations so the update count matches
the small-batch regime — is not this method's to change: the step budget is the workload's.
At evaluation the running statistics are used as usual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from executors.families.training.engine import Plan, trainer
from executors.registry import Method, MethodConfig, bounded, register_method


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from chunks of `ghost` examples."""

    def __init__(self, channels: int, ghost: int, eps: float, momentum: float):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.ghost = ghost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] <= self.ghost:
            return super().forward(x)
        chunks = x.split(self.ghost)
        momentum = 1 - (1 - (self.momentum or 0.1)) ** (1 / len(chunks))  # the same decay per full batch
        return torch.cat(
            [
                F.batch_norm(c, self.running_mean, self.running_var, self.weight, self.bias, True, momentum, self.eps)
                for c in chunks
            ]
        )


def ghost_model(ghost: int):
    def change(model: nn.Module, task) -> nn.Module:
        for module in list(model.modules()):
            for child_name, child in list(module.named_children()):
                if type(child) is nn.BatchNorm2d:
                    replacement = GhostBatchNorm2d(child.num_features, ghost, child.eps, child.momentum or 0.1)
                    replacement.load_state_dict(child.state_dict())
                    setattr(module, child_name, replacement)
        return model

    return change


@dataclass(frozen=True)
class GhostBNConfig(MethodConfig):
    ghost_batch: int = bounded(16, 2, 1024)
    small_batch: int = bounded(16, 1, 1024)  # the regime the recipe's learning rate is set for
    sqrt_lr: bool = True
    version: int = 1


@register_method(
    "train.largebatch.ghost_bn",
    GhostBNConfig,
    category="large-batch",
    families=("training",),
    changes=("outputs",),
    paper="Train longer, generalize better: closing the generalization gap in large batch training of neural networks",
    arxiv="1705.08741",
    catalogue_row=62,
    phase="training",
)
class GhostBN(Method):
    def supports(self, bundle, device):
        if "batch_norm" not in bundle.capabilities:
            return "the model has no batch normalisation to compute over ghost batches"
        return None

    def apply(self, bundle, config):
        def sqrt_rule(workload) -> float:
            return math.sqrt(max(1.0, workload.batch_size / config.small_batch)) if config.sqrt_lr else 1.0

        plan = Plan(
            "ghost batch norm",
            model=ghost_model(config.ghost_batch),
            lr_rule=sqrt_rule,
            notes={"ghost_batch": config.ghost_batch, "small_batch": config.small_batch},
        )
        return trainer(bundle, config, plan)
