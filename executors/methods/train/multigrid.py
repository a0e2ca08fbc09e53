"""`train.schedule.multigrid`: Multigrid training (Wu et al., "A Multigrid Method for Efficiently
Training Video Models", CVPR 2020), spatially for images and in sequence length for text.

Instead of one input shape, training cycles through coarser shapes with the mini-batch enlarged
so that a step costs about the same (batch × pixels, or batch × tokens, held constant), and the
learning rate scaled with the batch; the last part of training runs at the full shape. Here the
long cycle: the first (1 − `final_fraction`) of the budget repeats `cycles` times the shapes ½,
¾ and 1 of the side or length, the rest at full shape. The paper scales the rate linearly with
the batch under SGD; with AdamW the square root is the stable choice (`lr_scaling`).
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families.training.data import IMAGE_SIZE
from executors.families.training.engine import Plan, trainer
from executors.families.training.tasks import Shape
from executors.registry import Method, MethodConfig, bounded, register_method

FRACTIONS = (0.5, 0.75, 1.0)  # of the side (images) or the sequence (text)
SCALINGS = ("sqrt", "linear", "none")


def long_cycle(tokens: bool, cycles: int, final_fraction: float, scaling: str):
    def shape(step: int, workload) -> Shape:
        full, budget = (workload.seq_len if tokens else IMAGE_SIZE), workload.budget_steps
        cycled = int((1 - final_fraction) * budget)
        if step >= cycled:
            return Shape()
        phase = int(step / (cycled / (cycles * len(FRACTIONS)))) % len(FRACTIONS)
        fraction = FRACTIONS[phase]
        if fraction == 1.0:
            return Shape()
        size = max(2, int(full * fraction) // 4 * 4)
        batch_scale = (full / size) if tokens else (full / size) ** 2
        lr = {"sqrt": batch_scale**0.5, "linear": batch_scale, "none": 1.0}[scaling]
        return Shape(size=size, batch_scale=batch_scale, lr_scale=lr)

    return shape


@dataclass(frozen=True)
class MultigridConfig(MethodConfig):
    cycles: int = bounded(2, 1, 16)
    final_fraction: float = bounded(0.25, 0.0, 0.9)
    lr_scaling: str = "sqrt"
    version: int = 1


@register_method(
    "train.schedule.multigrid",
    MultigridConfig,
    category="schedule",
    families=("training",),
    changes=("outputs", "schedule"),
    paper="A Multigrid Method for Efficiently Training Video Models",
    arxiv="1912.00998",
    catalogue_row=34,
    phase="training",
)
class Multigrid(Method):
    def supports(self, bundle, device):
        if "variable_shape" not in bundle.capabilities:
            return "the model cannot take inputs of another size"
        return None

    def apply(self, bundle, config):
        if config.lr_scaling not in SCALINGS:
            raise ValueError(f"lr_scaling must be one of {SCALINGS}, not {config.lr_scaling!r}")
        shape = long_cycle(bundle.data.modality == "tokens", config.cycles, config.final_fraction, config.lr_scaling)
        plan = Plan(
            "Multigrid",
            shape=shape,
            notes={"cycles": config.cycles, "lr_scaling": config.lr_scaling, "final_fraction": config.final_fraction},
        )
        return trainer(bundle, config, plan)
