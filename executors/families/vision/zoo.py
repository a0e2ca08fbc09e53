"""The vision zoo: a MobileViT (hybrid conv + transformer) and a small ResNet trained here on the
shapes set, and a ViT-Tiny-like ViT on digits (a ViT trained from scratch for a few hundred
steps stays near chance on the cluttered shapes); each deterministic (fixed seed, seeded
batches, one thread) and cached as a Hugging Face folder (config.json + model.safetensors)
with vision.json and the zoo's manifest.

Each model trains at every resolution it is later profiled at (steps cycle through them), so
a workload at 32, 64 or 128 px measures the method, not resolution transfer. The held-out
accuracy at each resolution is in the manifest.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from executors.families.vision.data import ImageSet
from executors.families.vision.harness import Classifier, accuracy
from executors.families.vision.models import (
    CAPABILITIES,
    STORE_FAMILY,
    ImageClassifier,
    build_net,
    count_parameters,
    is_vision_folder,
    load_classifier,
    save_classifier,
)
from executors.families.vision.workload import VisionWorkload
from executors.registry import ModelBundle, ModelSpec
from executors.training import Schedule, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    steps: int
    batch_size: int
    lr: float
    warmup: int = 20
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class VisionZooModel:
    name: str
    model_type: str
    dataset: str
    config: dict
    resolutions: tuple[int, ...]  # trained and profiled at; steps cycle through them
    recipe: Recipe
    note: str


def _vit(image_size: int, width: int, layers: int, heads: int, classes: int) -> dict:
    return {
        "image_size": image_size,
        "patch_size": 4,
        "num_channels": 3,
        "hidden_size": width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * width,
        "num_labels": classes,
        "layer_norm_eps": 1e-6,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


MOBILEVIT_XXS = {
    "image_size": 64,
    "num_labels": 6,
    "hidden_sizes": [64, 80, 96],
    "neck_hidden_sizes": [16, 16, 24, 48, 64, 80, 320],
    "num_attention_heads": 4,
    "expand_ratio": 2.0,
    "hidden_dropout_prob": 0.0,
    "classifier_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}

RESNET_10 = {
    "num_channels": 3,
    "embedding_size": 16,
    "hidden_sizes": [16, 32, 64, 128],
    "depths": [1, 1, 1, 1],
    "layer_type": "basic",
    "num_labels": 6,
    "downsample_in_first_stage": False,
}

# Sized for 2 shared CPU cores: each model trains in a few CPU-minutes (300 steps of 32 images).
ZOO_MODELS: dict[str, VisionZooModel] = {
    m.name: m
    for m in (
        VisionZooModel(
            "mobilevit-xxs-shapes",
            "mobilevit",
            "shapes",
            MOBILEVIT_XXS,
            (64, 128),
            Recipe(300, 32, 2e-3),
            "MobileViT-XXS widths: conv stages + 3 MobileViT blocks (hybrid)",
        ),
        VisionZooModel(
            "resnet10-shapes",
            "resnet",
            "shapes",
            RESNET_10,
            (32, 64),
            Recipe(300, 32, 3e-3),
            "ResNet-10 (basic blocks, widths 16–128)",
        ),
        VisionZooModel(
            "vit-mini-digits",
            "vit",
            "digits",
            _vit(32, 64, 4, 2, 10),
            (32, 64),
            Recipe(400, 32, 1e-3, warmup=20),
            "ViT-Tiny-like, narrowed for 2 CPU cores (d64, 4 blocks, 2 heads, patch 4): 64/256 tokens at "
            "32/64 px, 1 285 in the multi-view mode at 128 px",
        ),
    )
}
FIXTURE = VisionZooModel(
    "vit-fixture-digits",
    "vit",
    "digits",
    _vit(16, 32, 4, 2, 10),
    (16,),
    Recipe(300, 32, 1e-3, warmup=20),
    "test fixture: trains in seconds",
)


def train_classifier(entry: VisionZooModel) -> tuple[ImageClassifier, dict]:
    recipe, images = entry.recipe, ImageSet(entry.dataset)
    classifier = ImageClassifier(build_net(entry.model_type, entry.config, recipe.seed))

    def step_loss(step: int, generator: torch.Generator) -> torch.Tensor:
        resolution = entry.resolutions[step % len(entry.resolutions)]
        pixels, labels = images.training_batch(recipe.batch_size, resolution, generator)
        return F.cross_entropy(classifier(pixels), labels, label_smoothing=recipe.label_smoothing)

    schedule = Schedule(recipe.lr, recipe.steps, warmup=recipe.warmup, weight_decay=recipe.weight_decay, clip=1.0)
    result = train(
        classifier.parameters(),
        step_loss,
        schedule,
        seed=recipe.seed,
        modules=[classifier],
        name=entry.name,
        log_every=50,
    )
    runner = Classifier(classifier)
    bundle = vision_bundle(
        classifier, {"dataset": entry.dataset, "resolutions": list(entry.resolutions)}, f"zoo:{entry.name}", entry.name
    )
    heldout = {str(r): round(accuracy(runner, bundle, VisionWorkload(1, r))["top1"], 4) for r in entry.resolutions}
    manifest = {
        "name": entry.name,
        "source": f"zoo:{entry.name}",
        "model_type": entry.model_type,
        "dataset": entry.dataset,
        "resolutions": list(entry.resolutions),
        "config": entry.config,
        "recipe": asdict(recipe),
        "note": entry.note,
        "params": count_parameters(classifier),
        "train_seconds": round(result.seconds, 1),
        "final_train_loss": round(result.last_loss, 4),
        "heldout_top1": heldout,
        "torch": torch.__version__,
        "threads": 1,
    }
    return classifier, manifest


def build_zoo_model(name: str):
    def build(folder: Path, _root: Path | None) -> dict:
        entry = ZOO_MODELS.get(name, FIXTURE)
        classifier, manifest = train_classifier(entry)
        save_classifier(classifier, folder, {"dataset": entry.dataset, "resolutions": list(entry.resolutions)})
        return manifest

    return build


def stage_widths(classifier: ImageClassifier) -> list[int]:
    return classifier.depth_widths()


def vision_bundle(classifier: ImageClassifier, meta: dict, source: str, name: str) -> ModelBundle:
    config, model_type = classifier.net.config, classifier.model_type
    images = ImageSet(meta["dataset"])
    if config.num_labels != len(images.classes):
        raise ValueError(f"{source}: {config.num_labels} labels, but the {images.name} set has {len(images.classes)}")
    vit = model_type == "vit"
    heads = config.num_attention_heads if model_type != "resnet" else None
    extra = {
        "model_type": model_type,
        "dataset": images.name,
        "resolutions": [int(r) for r in meta["resolutions"]],
        "num_labels": config.num_labels,
        "stage_widths": stage_widths(classifier),
        **({"patch_size": config.patch_size, "image_size": config.image_size} if vit else {}),
    }
    spec = ModelSpec(
        source=source,
        name=name,
        architecture=STORE_FAMILY[model_type],
        params=count_parameters(classifier),
        layers=len(classifier.blocks()),
        width=config.hidden_size if vit else max(extra["stage_widths"]),
        heads=heads,
        kv_heads=heads,
        context=(config.image_size // config.patch_size) ** 2 + 1 if vit else None,
        extra=extra,
    )
    return ModelBundle(
        model=classifier.eval(), family="vision", spec=spec, capabilities=CAPABILITIES[model_type], data=images
    )


def load_folder(folder: Path, source: str, name: str | None = None) -> ModelBundle:
    classifier, meta = load_classifier(folder)
    return vision_bundle(classifier, meta, source, name or folder.name)


def load_zoo(folder: Path, source: str) -> ModelBundle:
    return load_folder(folder, source, source.removeprefix("zoo:"))


def load_local(folder: Path, source: str) -> ModelBundle | None:
    return load_folder(folder, source) if is_vision_folder(folder) else None
