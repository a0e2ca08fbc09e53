"""Knowledge-distillation fine-tuning on a vision family's training images, shared by every method
that retrains a classifier against the unmodified one (QAT int8, GPUSQ-ViT, QFX, DisWOT).

The loss is Hinton et al.'s: temperature-softened KL to the teacher's logits (× T²) mixed with
cross-entropy on the labels; a method may add its own term (feature distillation, a
regulariser). Batches come from the family's `calibration` hook (training distribution, never
the held-out split), cycling through the resolutions the model was trained at, on the shared
seeded loop (`executors/training.py`). The student trains in eval mode: batch-norm statistics
stay those of the trained model, and the zoo's models have no dropout.

`distilled_student` is the recipe the fake-quantised students share (QAT int8, GPUSQ-ViT, QFX):
calibrate the input quantisers, distil, cache the student's weights by teacher and config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from executors.caching import Cached, cached_tensors
from executors.families import family_hook
from executors.methods.quant.layers import QuantLayer, init_inputs
from executors.registry import ModelBundle
from executors.training import Schedule, TrainResult, frozen, train


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    soft_weight: float = 0.9,
) -> torch.Tensor:
    soft = (
        F.kl_div(F.log_softmax(student / temperature, -1), F.softmax(teacher / temperature, -1), reduction="batchmean")
        * temperature**2
    )
    return soft_weight * soft + (1 - soft_weight) * F.cross_entropy(student, labels)


def training_images(bundle: ModelBundle) -> Callable[[int, int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """(count, step, generator) → a seeded training batch at the step's resolution."""
    draw, resolutions = family_hook(bundle, "calibration"), bundle.spec.extra["resolutions"]
    if draw is None:
        raise ValueError(f"the {bundle.family} family offers no training images to distil on")

    def batch(count: int, step: int, generator: torch.Generator):
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        return draw(bundle, count, resolutions[step % len(resolutions)], seed)

    return batch


def distil(
    student: nn.Module,
    teacher: nn.Module,
    bundle: ModelBundle,
    params: Iterable[nn.Parameter] | Iterable[dict],
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    temperature: float = 4.0,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    name: str = "distillation",
) -> TrainResult:
    """Trains `params` of `student` to match `teacher` on training images. `loss(pixels, labels)`
    replaces the logit KD (a method's own mix); `extra_loss()` is added (a regulariser)."""
    images = training_images(bundle)

    def logit_kd(pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(pixels)
        return kd_loss(student(pixels), target, labels, temperature)

    def step_loss(step: int, generator: torch.Generator) -> torch.Tensor:
        pixels, labels = images(batch, step, generator)
        value = (loss or logit_kd)(pixels, labels)
        return value + extra_loss() if extra_loss is not None else value

    schedule = Schedule(lr, steps, warmup=max(1, steps // 10), weight_decay=0.0, clip=1.0)
    student.eval()  # batch-norm statistics stay the trained model's (small mixed-resolution batches would skew them)
    with frozen(teacher):
        return train(params, step_loss, schedule, seed=seed, name=name, log_every=0)


def calibrate_inputs(
    model: nn.Module, bundle: ModelBundle, layers: list[QuantLayer], batches: int, batch: int, seed: int
) -> None:
    """Sets the input quantisers' ranges from `batches` training batches, run unquantised."""
    images = training_images(bundle)
    generator = torch.Generator().manual_seed(seed)
    init_inputs(model, layers, [images(batch, step, generator)[0] for step in range(batches)])


def distilled_student(
    cache_key: str,
    student: nn.Module,
    teacher: nn.Module,
    bundle: ModelBundle,
    layers: list[QuantLayer],
    config: Any,
    *,
    calibration_batches: int,
    params: Callable[[], Iterable[nn.Parameter] | Iterable[dict]] | None = None,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Cached:
    """Calibrates `layers`' inputs, distils `student` from `teacher` with the config's steps, batch,
    lr and seed (`params()`: what to train, default every parameter; `loss`: a method's own mix), and
    caches the trained weights under `cache_key` by teacher and config; on a hit they are loaded
    instead. The entry carries the build time and the last training loss."""

    def build():
        calibrate_inputs(student, bundle, layers, calibration_batches, config.batch, config.seed)
        result = distil(
            student,
            teacher,
            bundle,
            student.parameters() if params is None else params(),
            steps=config.steps,
            batch=config.batch,
            lr=config.lr,
            seed=config.seed,
            loss=loss,
            name=cache_key,
        )
        return student.state_dict(), {"last_loss": result.last_loss, "train_s": round(result.seconds, 1)}

    cached = cached_tensors(cache_key, teacher, asdict(config), build)
    if cached.hit:
        student.load_state_dict(cached.tensors)
    return cached
