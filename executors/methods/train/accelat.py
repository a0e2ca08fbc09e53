"""`train.schedule.acc_gradient_lr`: AccelAT's learning-rate rule (Nikfam et al., 2022, IEEE Access).

AccelAT sets the learning rate per epoch from the accuracy gradient — how fast the validation
accuracy is still improving — instead of a fixed decay: training holds a high rate while the
metric improves quickly and steps the rate down when the improvement, accumulated over the last
few evaluations, falls below a fraction of the early improvement. Here the "epoch" is the
workload's evaluation interval and the metric is the held-out loss or error (lower is better),
so the gradient is its decrease per evaluation. The paper applies it to adversarial training;
the rule itself is the method and is independent of the attack, so it runs on every task.
Threshold, window and factor are this implementation's defaults (the text gives the rule, not
one setting for all tasks).
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families.training.engine import Controller, Plan, trainer
from executors.registry import Method, MethodConfig, bounded, register_method


class AccuracyGradient(Controller):
    """Steps the learning-rate scale down when the accumulated improvement slows."""

    def __init__(self, window: int, threshold: float, factor: float, floor: float):
        self.window, self.threshold, self.factor, self.floor = window, threshold, factor, floor
        self.history: list[float] = []
        self.first_gain: float | None = None
        self.scale = 1.0
        self.drops: list[int] = []

    def on_eval(self, step: int, metric: float) -> None:
        self.history.append(metric)
        if len(self.history) <= self.window:
            return
        gain = (self.history[-self.window - 1] - self.history[-1]) / self.window
        if self.first_gain is None:
            self.first_gain = max(gain, 1e-12)
            return
        if gain < self.threshold * self.first_gain and self.scale > self.floor:
            self.scale = max(self.floor, self.scale * self.factor)
            self.drops.append(step)
            self.history = self.history[-1:]  # measure the gradient afresh at the new rate


def constant_after_warmup(step: int, budget: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup else 1.0


@dataclass(frozen=True)
class AccelATConfig(MethodConfig):
    window: int = bounded(2, 1, 20)  # evaluations the accuracy gradient accumulates over
    threshold: float = bounded(0.3, 0.0, 1.0)  # of the first measured gradient
    factor: float = bounded(0.5, 0.01, 1.0)
    floor: float = bounded(0.02, 0.0, 1.0)
    version: int = 1


@register_method(
    "train.schedule.acc_gradient_lr",
    AccelATConfig,
    category="schedule",
    families=("training",),
    changes=("outputs", "schedule"),
    paper="AccelAT: A Framework for Accelerating the Adversarial Training of Deep Neural Networks "
    "through Accuracy Gradient",
    arxiv="2210.06888",
    catalogue_row=36,
    phase="training",
)
class AccelAT(Method):
    def apply(self, bundle, config):
        def controller():
            return AccuracyGradient(config.window, config.threshold, config.factor, config.floor)

        plan = Plan(
            "accelat",
            schedule=constant_after_warmup,
            controller=controller,
            notes={"window": config.window, "threshold": config.threshold, "factor": config.factor},
        )
        return trainer(bundle, config, plan)
