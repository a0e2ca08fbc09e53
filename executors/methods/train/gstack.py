"""`train.growth.gstack`: G_stack depthwise stacking (Du et al., "Stacking Your Transformers: A
Closer Look at Model Growth for Efficient LLM Pre-Training", NeurIPS 2024).

Train a model `growth_factor` times shallower for the first `growth_fraction` of the budget,
then stack copies of its trained blocks depthwise ([1..k, 1..k, …]) into the full-depth model
and keep training it (a fresh optimiser state for the grown model, the same global schedule).
The paper's guideline sets g = 4 and a growth point from a fitted formula in tokens and FLOPs
for 7 B-scale runs; the recipes here are 4 blocks deep, so the default is g = 2 at a quarter of
the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families.training.engine import Plan, Stage, trainer
from executors.methods.train.growth import depth, shallow, stacked
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class GStackConfig(MethodConfig):
    growth_factor: int = bounded(2, 2, 8)
    growth_fraction: float = bounded(0.25, 0.05, 0.9)
    version: int = 1


@register_method(
    "train.growth.gstack",
    GStackConfig,
    category="growth",
    families=("training",),
    changes=("outputs", "schedule"),
    paper="Stacking Your Transformers: A Closer Look at Model Growth for Efficient LLM Pre-Training",
    arxiv="2405.15319",
    catalogue_row=7,
    phase="training",
)
class GStack(Method):
    def supports(self, bundle, device):
        if not {"transformer_blocks", "from_scratch"} <= bundle.capabilities:
            return "G_stack grows a transformer trained from scratch"
        return None

    def apply(self, bundle, config):
        full = depth(bundle.model)
        if full % config.growth_factor:
            raise ValueError(f"{full} blocks do not split into a growth factor of {config.growth_factor}")

        def stages(task, workload):
            grow_at = max(1, round(config.growth_fraction * workload.budget_steps))
            return [
                Stage(grow_at, lambda model, task: shallow(model, full // config.growth_factor), "shallow"),
                Stage(workload.budget_steps - grow_at, lambda model, task: stacked(model, full), "stacked"),
            ]

        plan = Plan(
            "G_stack",
            stages=stages,
            notes={"growth_factor": config.growth_factor, "growth_fraction": config.growth_fraction, "depth": full},
        )
        return trainer(bundle, config, plan)
