"""`distill.diswot`: DisWOT — training-free student search by a feature-similarity proxy, then KD.

Paper: Dong et al., "DisWOT: Student Architecture Search for Distillation WithOut Training"
(CVPR 2023, arXiv 2303.15678, catalogue row 3). Mechanism as the paper states it: a candidate
student is scored at random initialisation, without training, by how similar its features are
to the trained teacher's on one batch —
- semantic similarity: class activation maps (Grad-CAM: the last feature map weighted by the
  spatially pooled gradient of each image's label score), their batch Gram matrix compared
  with the teacher's (maps resized to a common grid, rows L2-normalised);
- relation similarity: the batch's sample-relation matrix (Gram of flattened feature maps,
  rows L2-normalised) compared with the teacher's;
score = −(‖G_s − G_t‖ + ‖A_s − A_t‖). An evolutionary search (population, mutation, keep the
best) over the family's student space (`executors/families/vision/students.py`: the teacher's
architecture with smaller widths and depths, under a parameter budget) maximises it, and the
winner is distilled from the teacher (KL at T = 4 plus cross-entropy). The record's setup time
holds search plus distillation (seeded, cached as safetensors; the genome is in the metadata).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from executors.caching import cached_tensors
from executors.families import default_runner, family_hook
from executors.methods.distill.kd import distil, training_images
from executors.registry import Method, MethodConfig, bounded, register_method

CACHE_FORMAT = 1


@dataclass(frozen=True)
class DisWotConfig(MethodConfig):
    max_params: float = bounded(0.5, 0.05, 1.0)  # student budget, a share of the teacher's parameters
    population: int = bounded(8, 2, 256)
    generations: int = bounded(4, 0, 256)
    proxy_images: int = bounded(32, 4, 512)
    steps: int = bounded(400, 0, 50_000)  # distillation of the chosen student
    batch: int = bounded(32, 1, 512)
    lr: float = bounded(1e-3, 1e-7, 1e-1)
    seed: int = 0
    version: int = 1


def gram(rows: torch.Tensor) -> torch.Tensor:
    rows = F.normalize(rows.flatten(1), dim=1)
    return F.normalize(rows @ rows.T, dim=1)


def class_maps(classifier, pixels: torch.Tensor, labels: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Grad-CAM of each image's label [B, side²], its feature map [B, C, h, w])."""
    with torch.inference_mode(False), torch.enable_grad():
        features = classifier.feature_map(pixels.clone()).detach().requires_grad_(True)
        logits = classifier.logits_from_map(features)
        (grad,) = torch.autograd.grad(logits.gather(1, labels[:, None]).sum(), features)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=(side, side), mode="bilinear", align_corners=False).flatten(1), features.detach()


def diswot_score(student, teacher_maps: torch.Tensor, teacher_features: torch.Tensor, pixels, labels) -> float:
    side = round(teacher_maps.shape[1] ** 0.5)
    maps, features = class_maps(student, pixels, labels, side)
    semantic = (gram(maps) - gram(teacher_maps)).norm()
    relation = (gram(features) - gram(teacher_features)).norm()
    return -(semantic + relation).item()


def student_space(bundle, config: DisWotConfig):
    space = family_hook(bundle, "students")
    if space is None:
        raise ValueError(f"the {bundle.family} family defines no student space to search")
    return space(bundle, config.max_params)


def search(bundle, config: DisWotConfig) -> tuple[dict, list[float]]:
    space = student_space(bundle, config)
    rng = random.Random(config.seed)
    pixels, labels = training_images(bundle)(config.proxy_images, 0, torch.Generator().manual_seed(config.seed))
    teacher_maps, teacher_features = class_maps(bundle.model, pixels, labels, 8)

    def score(genome: dict) -> float:
        return diswot_score(space.build(genome, config.seed), teacher_maps, teacher_features, pixels, labels)

    scored = [(score(g), g) for g in (space.sample(rng) for _ in range(config.population))]
    for _ in range(config.generations):
        scored.sort(key=lambda item: -item[0])
        parents = scored[: max(2, config.population // 2)]
        children = [space.mutate(rng.choice(parents)[1], rng) for _ in range(config.population - len(parents))]
        scored = parents + [(score(g), g) for g in children]
    scored.sort(key=lambda item: -item[0])
    return scored[0][1], [round(s, 4) for s, _ in scored]


@register_method(
    "distill.diswot",
    DisWotConfig,
    category="distillation",
    families=("vision",),
    changes=("weights", "params", "outputs"),
    paper="DisWOT: Student Architecture Search for Distillation WithOut Training",
    arxiv="2303.15678",
    catalogue_row=3,
    lossless=False,
)
class DisWot(Method):
    order = 5  # replaces the model: before any weight transform applied to the student
    composes_with = frozenset({"baseline", "quant.int8_dynamic"})

    def supports(self, bundle, device):
        if family_hook(bundle, "students") is None or "stage_features" not in bundle.capabilities:
            return "searches a student space the model's family defines; this family defines none"
        return None

    def apply(self, bundle, config):
        space = student_space(bundle, config)
        built = {}

        def build():
            genome, scores = search(bundle, config)
            student = space.build(genome, config.seed)
            result = distil(
                student,
                bundle.model,
                bundle,
                student.parameters(),
                steps=config.steps,
                batch=config.batch,
                lr=config.lr,
                seed=config.seed,
                name="diswot",
            )
            built["student"] = student
            return student.state_dict(), {"genome": genome, "proxy_scores": scores, "last_loss": result.last_loss}

        cached = cached_tensors(f"diswot-v{CACHE_FORMAT}", bundle.model, asdict(config), build)
        student = built.get("student") or space.build(cached.meta["genome"], config.seed)
        if cached.hit:
            student.load_state_dict(cached.tensors)
        params = sum(p.numel() for p in student.parameters())
        stats = {
            "student": cached.meta["genome"],
            "student_params": params,
            "param_ratio": round(params / bundle.spec.params, 4),
            "setup_search_and_kd_s": cached.build_s,
            "proxy_scores": cached.meta["proxy_scores"][:8],
        }
        return default_runner(bundle, student.eval(), stats)
