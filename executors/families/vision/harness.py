"""The vision family's runner protocol (`classify`) and its hook on the measurement protocol.

A timed call classifies `batch_size` held-out images (or their multi-view form). Quality is the
top-1 accuracy on the whole fixed held-out split (≥ 1 000 images) at the workload's resolution
and view mode, measured through the runner's own model — a quantized, compiled, token-reduced
or exported model is scored as it runs — against the reference's on the same images. Accuracy
is computed once per (model weights, method config, resolution, views) in a process: a thread
count changes neither. FLOPs per image are counted on one image through the runner's model
(torch's FlopCounterMode: matmuls, convolutions, attention); a model that runs outside torch
(ONNX Runtime, OpenVINO) or through kernels the counter does not see (int8) reports the
reference's count and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from executors.caching import weights_digest
from executors.families.vision.data import ImageSet, to_pixels
from executors.families.vision.models import bundle_classifier, multi_view
from executors.families.vision.workload import VisionWorkload
from executors.protocol import KindHarness, Prepared, Quality
from executors.registry import ModelBundle, model_device, unwrap

EVAL_BATCH = 100
HEADROOM = 0.1  # top-1 points the reference must stand above guessing for a loss to show
_ACCURACY: dict[tuple, dict] = {}  # (weights digest, config, resolution, crops) → figures, for this process


@dataclass
class Classifier:
    """The vision family's plain runner: `classify(pixels)` → logits [B, classes]."""

    model: nn.Module
    stats: dict = field(default_factory=dict)

    @torch.inference_mode()
    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)


def images_of(bundle: ModelBundle) -> ImageSet:
    return ImageSet(bundle.spec.extra["dataset"])


def inputs(bundle: ModelBundle, workload: VisionWorkload, count: int, start: int = 0) -> torch.Tensor:
    """`count` held-out images from `start` (cycling) as the model reads them: pixels or views."""
    images, _ = images_of(bundle).heldout(workload.resolution)
    index = torch.arange(start, start + count) % len(images)
    pixels = to_pixels(images[index])
    return multi_view(pixels, workload.grid) if workload.crops > 1 else pixels


@torch.inference_mode()
def accuracy(runner, bundle: ModelBundle, workload: VisionWorkload) -> dict:
    """Top-1 accuracy of the runner on the whole held-out split at the workload's resolution and views."""
    images, labels = images_of(bundle).heldout(workload.resolution)
    correct = []
    for start in range(0, len(images), EVAL_BATCH):
        batch = inputs(bundle, workload, min(EVAL_BATCH, len(images) - start), start).to(model_device(bundle))
        correct.append(runner.classify(batch).argmax(-1).cpu() == labels[start : start + len(batch)])
    hits = torch.cat(correct)
    return {"top1": hits.float().mean().item(), "images": len(hits), "correct": hits}


def accuracy_figures(prepared: Prepared, bundle: ModelBundle, workload: VisionWorkload) -> dict:
    key = ("top1", workload.resolution, workload.crops)
    if key not in prepared.quality:
        cache_key = (weights_digest(unwrap(prepared.applied_runner.model)), repr(prepared.config_json)) + key[1:]
        if cache_key not in _ACCURACY:
            _ACCURACY[cache_key] = accuracy(prepared.applied_runner, bundle, workload)
        prepared.quality[key] = _ACCURACY[cache_key]
    return prepared.quality[key]


def runner_stats(prepared: Prepared) -> dict:
    """What the method's runner says about itself (the family's runners carry `stats`)."""
    return dict(getattr(prepared.runner, "stats", None) or {})


def runs_quantized_kernels(model: nn.Module) -> bool:
    """torch's quantized modules (dynamic int8 linears) run ops FlopCounterMode does not count."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in unwrap(model).modules())


def count_flops(model: nn.Module, sample: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(sample)
    return int(counter.get_total_flops())


def flops_figures(prepared: Prepared, bundle: ModelBundle, workload: VisionWorkload) -> dict:
    key = ("flops", workload.resolution, workload.crops)
    if key not in prepared.quality:
        model = prepared.applied_runner.model
        if runner_stats(prepared).get("flops_basis") == "reference" or runs_quantized_kernels(model):
            prepared.quality[key] = {"flops_per_image": None, "flops_basis": "reference"}
        else:
            flops = count_flops(model, inputs(bundle, workload, 1).to(model_device(bundle)))
            prepared.quality[key] = {"flops_per_image": flops, "flops_basis": "counted (FlopCounterMode)"}
    return prepared.quality[key]


def activation_bytes(bundle: ModelBundle, workload: VisionWorkload) -> int:
    """fp32 working set of the reference's widest step: a ViT block (q/k/v/out, MLP, T×T scores)
    or the largest feature map of a convolutional stage (input, output and a temporary)."""
    config, extra = bundle_classifier(bundle).net.config, bundle.spec.extra
    views = workload.crops + 1 if workload.crops > 1 else 1
    if extra["model_type"] == "vit":
        tokens = views * ((workload.view_resolution // config.patch_size) ** 2 + 1)
        scores = config.num_attention_heads * tokens**2
        return 4 * workload.batch_size * (tokens * (4 * config.hidden_size + config.intermediate_size) + scores)
    widest = max(extra.get("stage_widths") or [64])
    side = workload.resolution / 4  # the stem quarters the side
    return int(4 * workload.batch_size * 3 * widest * side * side / 4)


class ClassifyHarness(KindHarness):
    unit = "img/s"

    def session(self, bundle, workload, device, baseline, warmup):
        return inputs(bundle, workload, workload.batch_size).to(device)

    def call(self, runner, session, workload, seed):
        return runner.classify(session)

    def misfit(self, prepared, workload):
        if workload.crops == 1 and runner_stats(prepared).get("applies_to") == "multi-view input":
            return "acts on a thumbnail + crops input; this workload feeds whole images (crops=1)"
        return None

    def working_bytes(self, bundle, workload, outputs):
        return activation_bytes(bundle, workload)

    def quality(self, prepared, baseline, bundle, workload, session, outputs) -> Quality:
        mine, base = accuracy_figures(prepared, bundle, workload), accuracy_figures(baseline, bundle, workload)
        agree = (mine["correct"] == base["correct"]).float().mean().item()
        classes = bundle.spec.extra["num_labels"]
        figures = {
            "heldout_images": mine["images"],
            "image_set": bundle.spec.extra["dataset"],
            "prediction_agreement": agree,  # share of images both get right or both get wrong
            "quality_basis": "held-out split classified by the runner's own model",
            "chance_top1": 1 / classes,
        }
        delta = mine["top1"] - base["top1"]
        return Quality("heldout_top1", base["top1"], mine["top1"], delta, above_chance(base["top1"], classes), figures)

    def metrics(self, prepared, baseline, bundle, workload, session, outputs) -> dict:
        mine = flops_figures(prepared, bundle, workload)
        reference = flops_figures(baseline, bundle, workload)
        flops = mine["flops_per_image"] if mine["flops_per_image"] else reference["flops_per_image"]
        stats = {k: v for k, v in runner_stats(prepared).items() if k != "flops_basis"}
        return {
            "flops_per_image": flops,
            "baseline_flops_per_image": reference["flops_per_image"],
            "flops_basis": mine["flops_basis"] if mine["flops_per_image"] else "reference (not countable here)",
            "flops_ratio": round(reference["flops_per_image"] / flops, 4) if flops else None,
            "tokens_per_image": tokens_per_image(bundle, workload),
            "peak_mem_basis": "weights + the reference's widest fp32 activation step (estimate)",
            **stats,
        }


def above_chance(reference_top1: float, classes: int) -> bool:
    """Whether a top-1 delta can show a loss: a reference near guessing (a model that has not
    learned this resolution) has no accuracy left to lose."""
    return reference_top1 - 1 / classes >= HEADROOM


def tokens_per_image(bundle: ModelBundle, workload: VisionWorkload) -> int | None:
    """Patch tokens (plus class tokens) a ViT's first block sees for this workload; None for a CNN."""
    patch = bundle.spec.extra.get("patch_size")
    if not patch:
        return None
    views = workload.crops + 1 if workload.crops > 1 else 1
    return views * (math.ceil(workload.view_resolution / patch) ** 2 + 1)


def observe(runner, bundle: ModelBundle) -> dict:
    """What the registry suite compares with the reference: logits of eight held-out images, whole
    and (for a ViT) as thumbnail + crops of an image twice the size — what a view method changes."""
    resolution = bundle.spec.extra["resolutions"][0]
    logits = [runner.classify(inputs(bundle, VisionWorkload(8, resolution), 8))]
    if "vit_tokens" in bundle.capabilities:
        logits.append(runner.classify(inputs(bundle, VisionWorkload(8, 2 * resolution, crops=4), 8)))
    return {"outputs": torch.cat(logits)}
