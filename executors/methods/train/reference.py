"""`train.reference`: the reference recipe every training speed-up divides by (AlgoPerf's
baseline role): AdamW, linear warm-up, cosine decay to zero over the step budget, the task's
own data and loss. Its learning rate gets the same tuning budget as every method."""

from __future__ import annotations

from dataclasses import dataclass

from executors.families.training.engine import Plan, trainer
from executors.registry import Method, MethodConfig, register_method


@dataclass(frozen=True)
class ReferenceConfig(MethodConfig):
    version: int = 1


@register_method(
    "train.reference",
    ReferenceConfig,
    category="reference",
    families=("training",),
    changes=(),
    paper="AlgoPerf: Benchmarking Neural Network Training Algorithms (reference recipe: AdamW + warm-up + cosine)",
    arxiv="2306.07179",
    catalogue_row=35,
    phase="training",
)
class TrainReference(Method):
    def apply(self, bundle, config):
        return trainer(bundle, config, Plan())
