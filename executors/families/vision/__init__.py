"""The `vision` family: image classifiers from transformers' own classes — a hybrid MobileViT
and a ResNet trained here on seeded synthetic shapes, a ViT on scikit-learn's digits, or a user's
Hugging Face vision folder — classifying held-out images (`vision-classify`), judged by top-1
accuracy on a fixed held-out split of 1 000 images against the unmodified model.

data.py the image sets (shapes renderer, digits) · models.py the classifier wrapper, stages and
multi-view input · zoo.py the zoo and loaders · students.py the student space DisWOT searches ·
workload.py the workload · harness.py the runner (`classify`) and the protocol hook.
"""

from __future__ import annotations

from pathlib import Path

import torch

from executors.families import ConfigReader, Family, WorkloadKind, ZooEntry, register_family
from executors.families.vision import hf_loader, zoo
from executors.families.vision.harness import Classifier, ClassifyHarness, observe
from executors.families.vision.models import ARCHITECTURES, multi_view
from executors.families.vision.students import student_space
from executors.families.vision.workload import VisionWorkload, call_seconds, describe, parse_grid


def fixture(root: Path):
    """A four-block d32 ViT on 16×16 digits (≈ 55 k params), trained in seconds into `root`'s zoo cache."""
    from executors.zoo import build, load_bundle

    build(zoo.FIXTURE.name, root)
    return load_bundle(f"zoo:{zoo.FIXTURE.name}", root, build_missing=False)


def calibration_images(bundle, count: int, resolution: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` seeded training-distribution images (pixels, labels): never the held-out split."""
    return bundle.data.training_batch(count, resolution, torch.Generator().manual_seed(seed))


def calibration_inputs(bundle, example: tuple[torch.Tensor, ...], count: int, seed: int) -> list[tuple[torch.Tensor]]:
    """Training-distribution inputs shaped like `example` (whole images or thumbnail + crops), in batches of 16."""
    sample = example[0]
    grid = round((sample.shape[1] - 1) ** 0.5) if sample.dim() == 5 else 1
    pixels, _ = calibration_images(bundle, count, sample.shape[-1] * grid, seed)
    inputs = multi_view(pixels, grid) if grid > 1 else pixels
    return [(batch,) for batch in inputs.split(16)]


def _zoo() -> tuple[ZooEntry, ...]:
    entries = [
        ZooEntry(name, "vision", entry.note, zoo.load_zoo, zoo.build_zoo_model(name))
        for name, entry in {**zoo.ZOO_MODELS, zoo.FIXTURE.name: zoo.FIXTURE}.items()
    ]
    return tuple(entries)


CLASSIFY = WorkloadKind(
    name=VisionWorkload.kind,
    family="vision",
    workload=VisionWorkload,
    reference="baseline",
    harness=ClassifyHarness(),
    keyword="classify",
    parse=parse_grid,
    describe=describe,
    call_seconds=call_seconds,
)

register_family(
    Family(
        name="vision",
        description="image classifiers (ViT, MobileViT, ResNet from transformers) on shapes and digits",
        runner_protocol="classify",
        runner=lambda model, stats=None: Classifier(model, dict(stats or {})),
        kinds=(CLASSIFY,),
        quality_metrics=("heldout_top1",),
        zoo=_zoo(),
        architectures=("vit", "hybrid-vit", "cnn"),
        fixture=fixture,
        local_loader=zoo.load_local,
        config_reader=ConfigReader(
            model_types=ARCHITECTURES,
            describe=hf_loader.describe,
            needs=("vision.json", "model.safetensors"),  # the image set its quality is measured on; one weights file
        ),
        hooks={
            "observe": observe,
            "calibration": calibration_images,
            "calibration_inputs": calibration_inputs,
            "students": student_space,
        },
    )
)
