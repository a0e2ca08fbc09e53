"""`deploy.qat_int8`: quantization-aware training to int8 (the deployment study's QAT int8 step).

The Jetson study (catalogue row 12) fine-tunes its classifier with int8 fake quantization before
TensorRT builds int8 engines from it. Here every convolution and linear layer gets int8 weights
(symmetric, per output channel) and int8 inputs (asymmetric, per tensor), both with LSQ-learned
steps initialised from the weights and from calibration images, and the whole model is
fine-tuned by distillation from the unmodified one (KL at T = 4 plus cross-entropy,
`executors/methods/distill/kd.py`). Training is seeded and cached as safetensors (setup time).

On CPU the trained model runs as fake quantization in fp32: the accuracy is what an int8 engine
would deliver from these codes and steps, the speed is not an int8 kernel's (torch has no
dynamic int8 convolution, and ONNX Runtime did not fuse fake-quantised convolutions into int8
kernels in our check) — compare `deploy.onnxruntime_int8` for the CPU int8 speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families import default_runner
from executors.methods.distill.kd import distilled_student
from executors.methods.quant.layers import FakeQuant, QuantLayer, input_axis, weight_quantizer, wrap_layers
from executors.registry import Method, MethodConfig, bounded, register_method

CACHE_FORMAT = 1


@dataclass(frozen=True)
class QatInt8Config(MethodConfig):
    bits: int = bounded(8, 4, 8)
    steps: int = bounded(150, 0, 20_000)
    batch: int = bounded(32, 1, 512)
    lr: float = bounded(1e-4, 1e-7, 1e-1)
    calibration_batches: int = bounded(4, 1, 64)
    seed: int = 0
    version: int = 1


def int8_layer(bits: int):
    def make(layer):
        return QuantLayer(
            layer, weight_quantizer(layer, bits), FakeQuant(bits, asymmetric=True, axis=input_axis(layer))
        )

    return make


@register_method(
    "deploy.qat_int8",
    QatInt8Config,
    category="quantization",
    families=("vision",),
    changes=("weights", "outputs"),
    paper="Deployment recipe of the Jetson wildfire study (QAT int8): int8 quantization-aware training",
    catalogue_row=12,
    lossless=False,
)
class QatInt8(Method):
    order = 10
    composes_with = frozenset({"baseline"})

    def supports(self, bundle, device):
        if "image_classifier" not in bundle.capabilities:
            return "fine-tunes an image classifier on its training images"
        return None

    def apply(self, bundle, config):
        teacher = bundle.model
        student, layers = wrap_layers(teacher, int8_layer(config.bits))

        cached = distilled_student(
            f"qat-int8-v{CACHE_FORMAT}",
            student,
            teacher,
            bundle,
            layers,
            config,
            calibration_batches=config.calibration_batches,
        )
        stats = {
            "bits": config.bits,
            "quantized_layers": len(layers),
            "setup_training_s": cached.build_s,
            "int8_kernels": False,
            "flops_basis": "reference",
            "last_loss": cached.meta.get("last_loss"),
        }
        return default_runner(bundle, student.eval(), stats)
