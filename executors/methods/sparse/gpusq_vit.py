"""`sparse.gpusq_vit`: GPUSQ-ViT — 2:4 structured sparsity plus quantization-aware training with
knowledge distillation, for GPU sparse tensor cores.

Paper: Yu et al., "Boost Vision Transformer with GPU-Friendly Sparsity and Quantization"
(CVPR 2023, arXiv 2305.10727, catalogue row 32). Mechanism as the paper states it:

1. 2:4 structured pruning of every convolution and linear layer whose fan-in divides by 4 (the
   two largest |w| of every four consecutive inputs stay; a convolution's inputs are its
   in_channels × kernel positions, as a sparse tensor core reads them); masks are fixed after.
2. Sparse-distillation-aware QAT: int8 (or int4) fake quantization of weights (per channel)
   and inputs (per tensor) with LSQ steps, trained with mixed-strategy distillation from the
   dense fp32 model — soft logits (KL at T = 4, plus cross-entropy) and every block's output
   features (mean squared error of layer-normalised features, weight `feature_weight`).

Speed: 2:4 kernels exist only on CUDA (`torch.sparse.to_sparse_semi_structured`, Ampere and
later); this executor has none wired and CPU has none, so here the method measures the quality a
2:4 + int8 engine would deliver and its dense fp32 emulation speed (`sparse_kernels: false` in
every record). Training is seeded and cached (setup time).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from executors.families import default_runner
from executors.methods.distill.kd import distilled_student, kd_loss
from executors.methods.quant.layers import (
    FakeQuant,
    QuantLayer,
    input_axis,
    two_four_mask,
    weight_quantizer,
    wrap_layers,
)
from executors.registry import Method, MethodConfig, bounded, register_method

CACHE_FORMAT = 1


@dataclass(frozen=True)
class GpusqConfig(MethodConfig):
    bits: int = bounded(8, 4, 8)
    steps: int = bounded(200, 0, 20_000)
    batch: int = bounded(32, 1, 512)
    lr: float = bounded(2e-4, 1e-7, 1e-1)
    feature_weight: float = bounded(1.0, 0.0, 100.0)
    temperature: float = bounded(4.0, 0.1, 100.0)
    seed: int = 0
    version: int = 1


def sparse_layer(bits: int):
    def make(layer):
        fan_in = layer.weight[0].numel()
        mask = two_four_mask(layer.weight) if fan_in % 4 == 0 else None
        return QuantLayer(
            layer, weight_quantizer(layer, bits), FakeQuant(bits, asymmetric=True, axis=input_axis(layer)), mask=mask
        )

    return make


def block_outputs(classifier, pixels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every block's output and the logits, in one pass through the stages."""
    hidden, features = classifier.embed(pixels), []
    for block in classifier.blocks():
        hidden = block(hidden)
        features.append(hidden)
    return features, classifier.head(classifier.read_out(hidden))


def normalised(feature: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(feature.flatten(1), feature.flatten(1).shape[1:])


def mixed_distillation(student, teacher, config: GpusqConfig):
    def loss(pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features, target_logits = block_outputs(teacher, pixels)
        features, logits = block_outputs(student, pixels)
        feature_loss = sum(
            F.mse_loss(normalised(s), normalised(t)) for s, t in zip(features, target_features, strict=True)
        )
        return kd_loss(logits, target_logits, labels, config.temperature) + config.feature_weight * feature_loss

    return loss


@register_method(
    "sparse.gpusq_vit",
    GpusqConfig,
    category="sparsity",
    families=("vision",),
    changes=("weights", "outputs"),
    paper="Boost Vision Transformer with GPU-Friendly Sparsity and Quantization (GPUSQ-ViT)",
    arxiv="2305.10727",
    catalogue_row=32,
    lossless=False,
)
class GpusqVit(Method):
    order = 10
    composes_with = frozenset({"baseline"})

    def supports(self, bundle, device):
        if "stage_features" not in bundle.capabilities:
            return "distils block features: the model must expose its stages"
        return None

    def apply(self, bundle, config):
        teacher = bundle.model
        student, layers = wrap_layers(teacher, sparse_layer(config.bits))

        cached = distilled_student(
            f"gpusq-v{CACHE_FORMAT}",
            student,
            teacher,
            bundle,
            layers,
            config,
            calibration_batches=4,
            loss=mixed_distillation(student, teacher, config),
        )
        masks = [layer.mask for layer in layers if layer.mask is not None]
        zeros = sum(int((~mask).sum()) for mask in masks)
        total = sum(layer.layer.weight.numel() for layer in layers)
        stats = {
            "bits": config.bits,
            "sparse_layers": len(masks),
            "dense_layers": len(layers) - len(masks),
            "sparsity": round(zeros / total, 4),
            "sparse_kernels": False,
            "flops_basis": "reference",
            "setup_training_s": cached.build_s,
            "last_loss": cached.meta.get("last_loss"),
        }
        return default_runner(bundle, student.eval(), stats)
