"""`quant.qfx`: QFX — trainable fixed-point quantization, with bit-operations beside accuracy.

Paper: Cheng et al., "QFX: Trainable Fixed-Point Quantization for Deep Learning Acceleration on
FPGAs" (arXiv 2401.17544, catalogue row 17). Mechanism as the paper states it: weights and
activations are fixed-point numbers of a given word length whose binary-point position (the
fractional bits f, step 2^−f) is itself trained — rounded in the forward pass, its gradient
passed straight through — jointly with the weights during quantization-aware training. Every
convolution and linear layer's weight (per output channel) and input (per tensor) is
quantized; the binary points start at the finest position that still covers the observed range.

Hardware: QFX targets FPGA HLS, where fixed-point multipliers are what costs; there is no FPGA
here, so the executor reports accuracy and bit-operations (BOPs = Σ MACs × weight bits ×
activation bits, against the fp32 model's MACs × 32 × 32) and runs the fixed-point model as an
fp32 emulation (expect a speed-up below 1). Deviations: batch norm and residual additions stay in
floating point (QFX also quantizes them), and the multiplier-free (K-hot) mode is not built.
Training distils from the fp32 model (KL + cross-entropy), seeded and cached (setup time).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from executors.families import default_runner
from executors.methods.distill.kd import distilled_student, training_images
from executors.methods.quant.layers import FakeQuant, QuantLayer, input_axis, layer_macs, weight_quantizer, wrap_layers
from executors.registry import Method, MethodConfig, bounded, register_method

CACHE_FORMAT = 1


@dataclass(frozen=True)
class QfxConfig(MethodConfig):
    weight_bits: int = bounded(8, 2, 16)  # word length of every weight
    activation_bits: int = bounded(8, 2, 16)  # word length of every layer input
    steps: int = bounded(200, 0, 20_000)
    batch: int = bounded(32, 1, 512)
    lr: float = bounded(1e-4, 1e-7, 1e-1)
    binary_point_lr: float = bounded(1e-2, 0.0, 1.0)  # fractional bits move in steps of one
    seed: int = 0
    version: int = 1


def fixed_point_layer(config: QfxConfig):
    def make(layer):
        weight = weight_quantizer(layer, config.weight_bits, fixed_point=True)
        activation = FakeQuant(config.activation_bits, axis=input_axis(layer), fixed_point=True)
        return QuantLayer(layer, weight, activation)

    return make


def bit_operations(model, layers, bundle, config: QfxConfig) -> dict:
    sample, _ = training_images(bundle)(1, 0, torch.Generator().manual_seed(config.seed))  # the first resolution
    macs = layer_macs(model, sample)
    total = sum(macs.values())
    bops = total * config.weight_bits * config.activation_bits
    return {
        "macs_per_image": total,
        "bops_per_image": bops,
        "fp32_bops_per_image": total * 32 * 32,
        "bops_ratio": round(total * 32 * 32 / bops, 2) if bops else None,
        "bops_resolution": bundle.spec.extra["resolutions"][0],
    }


@register_method(
    "quant.qfx",
    QfxConfig,
    category="quantization",
    families=("vision",),
    changes=("weights", "outputs"),
    paper="QFX: Trainable Fixed-Point Quantization for Deep Learning Acceleration on FPGAs",
    arxiv="2401.17544",
    catalogue_row=17,
    lossless=False,
)
class Qfx(Method):
    order = 10
    composes_with = frozenset({"baseline"})

    def supports(self, bundle, device):
        if "conv_layers" not in bundle.capabilities and "linear_layers" not in bundle.capabilities:
            return "quantizes convolution and linear layers; this model declares neither"
        return None

    def apply(self, bundle, config):
        teacher = bundle.model
        student, layers = wrap_layers(teacher, fixed_point_layer(config))

        def groups():  # the binary points learn at their own rate
            points = [q.frac for layer in layers for q in layer.quantizers()]
            others = [p for name, p in student.named_parameters() if not name.endswith(".frac")]
            return [{"params": others}, {"params": points, "lr": config.binary_point_lr}]

        cached = distilled_student(
            f"qfx-v{CACHE_FORMAT}", student, teacher, bundle, layers, config, calibration_batches=4, params=groups
        )
        fractional = [int(q.frac.detach().round().mean()) for layer in layers if (q := layer.weight_quant) is not None]
        stats = {
            "weight_bits": config.weight_bits,
            "activation_bits": config.activation_bits,
            **bit_operations(student, layers, bundle, config),
            "fixed_point_layers": len(layers),
            "mean_weight_fraction_bits": round(sum(fractional) / len(fractional), 2),
            "fpga": False,
            "flops_basis": "reference",
            "setup_training_s": cached.build_s,
        }
        return default_runner(bundle, student.eval(), stats)
