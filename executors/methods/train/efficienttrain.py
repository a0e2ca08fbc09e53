"""`train.curriculum.efficienttrain`: EfficientTrain's curriculum (Wang et al., "EfficientTrain:
Exploring Generalized Curriculum Learning for Training Visual Backbones", ICCV 2023).

Early in training a network learns mostly from the low frequencies of an image, so the first
part of training sees only them: a low-frequency crop of the centred 2-D spectrum (of size B
× B, giving a smaller image that is cheaper to train on — a real CPU saving, not only fewer
steps), B growing linearly to the full size, and the augmentation's strength growing linearly
from zero. The paper's schedule (found by greedy search on ImageNet) starts at 160/224 ≈ 0.7 of
the side; at 16 × 16 the default starts at half the side and reaches full size at 60 % of the
budget, in steps of the ViT's patch (sizes 8, 12, 16).
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families.training.data import IMAGE_SIZE
from executors.families.training.engine import Plan, trainer
from executors.families.training.tasks import Shape
from executors.registry import Method, MethodConfig, bounded, register_method

QUANTUM = 4  # the ViT's patch: every size stays a whole number of patches


def curriculum(start_fraction: float, full_at: float):
    def shape(step: int, workload) -> Shape:
        budget = workload.budget_steps
        progress = min(1.0, step / max(1.0, full_at * budget))
        side = start_fraction * IMAGE_SIZE + (1 - start_fraction) * IMAGE_SIZE * progress
        size = min(IMAGE_SIZE, max(QUANTUM, int(side) // QUANTUM * QUANTUM))
        return Shape(size=size if size < IMAGE_SIZE else None, augment_scale=step / budget, lowpass=True)

    return shape


@dataclass(frozen=True)
class EfficientTrainConfig(MethodConfig):
    start_fraction: float = bounded(0.5, 0.25, 1.0)
    full_at: float = bounded(0.6, 0.05, 1.0)
    version: int = 1


@register_method(
    "train.curriculum.efficienttrain",
    EfficientTrainConfig,
    category="curriculum",
    families=("training",),
    changes=("outputs", "schedule"),
    paper="EfficientTrain: Exploring Generalized Curriculum Learning for Training Visual Backbones",
    arxiv="2211.09703",
    catalogue_row=86,
    phase="training",
)
class EfficientTrain(Method):
    def supports(self, bundle, device):
        if "images" not in bundle.capabilities:
            return "a frequency curriculum crops image spectra; this recipe trains on text"
        return None

    def apply(self, bundle, config):
        plan = Plan(
            "EfficientTrain",
            shape=curriculum(config.start_fraction, config.full_at),
            notes={"start_fraction": config.start_fraction, "full_at": config.full_at},
        )
        return trainer(bundle, config, plan)
