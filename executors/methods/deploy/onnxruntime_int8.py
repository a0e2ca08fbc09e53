"""`deploy.onnxruntime_int8`: ONNX Runtime with its own int8 quantizer (post-training int8 on CPU).

The deployment study's post-training int8 step (catalogue row 12) on a CPU runtime: the exported
graph goes through `onnxruntime.quantization` — static QDQ quantization (int8 per-channel
weights, int8 activations with ranges calibrated on training-distribution inputs, the
counterpart of TensorRT's int8 calibration) where the family offers calibration inputs, else
dynamic quantization (int8 weights, activation ranges per call) — and ONNX Runtime runs the
int8 kernels it fuses from the result. Export, calibration and quantization are setup time.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from executors.families import default_runner, family_hook
from executors.methods.deploy.export import ExportedModel
from executors.methods.deploy.onnxruntime import ort_session, supports_ort
from executors.registry import Method, MethodConfig, bounded, register_method

MODES = ("auto", "static", "dynamic")


@dataclass(frozen=True)
class OnnxRuntimeInt8Config(MethodConfig):
    mode: str = "auto"  # static where the family has calibration images, else dynamic
    calibration_images: int = bounded(128, 8, 4096)
    per_channel: bool = True
    seed: int = 0
    version: int = 1


def quantize_graph(graph: bytes, config: OnnxRuntimeInt8Config, calibration: list[tuple] | None) -> bytes:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as folder:
        source, prepared, target = (Path(folder) / name for name in ("model.onnx", "pre.onnx", "int8.onnx"))
        source.write_bytes(graph)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if calibration is None:
            quantize_dynamic(str(prepared), str(target), per_channel=config.per_channel, weight_type=QuantType.QInt8)
        else:
            import onnx

            names = [i.name for i in onnx.load(str(prepared)).graph.input]
            feeds = [dict(zip(names, (a.numpy() for a in inputs), strict=True)) for inputs in calibration]

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.batches = iter(feeds)

                def get_next(self):
                    return next(self.batches, None)

            quantize_static(
                str(prepared),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
            )
        return target.read_bytes()


@register_method(
    "deploy.onnxruntime_int8",
    OnnxRuntimeInt8Config,
    category="runtime",
    families=("vision", "encoder"),
    changes=("weights", "outputs"),
    paper="Deployment recipe of the Jetson wildfire study (post-training int8): ONNX Runtime's int8 quantizer",
    catalogue_row=12,
    lossless=False,
)
class OnnxRuntimeInt8(Method):
    order = 80
    composes_with = frozenset({"baseline"})

    def supports(self, bundle, device):
        return supports_ort(bundle, device)

    def apply(self, bundle, config):
        if config.mode not in MODES:
            raise ValueError(f"deploy.onnxruntime_int8: mode must be one of {MODES}, not {config.mode!r}")
        draw = family_hook(bundle, "calibration_inputs")
        static = config.mode == "static" or (config.mode == "auto" and draw is not None)
        if static and draw is None:
            raise ValueError("deploy.onnxruntime_int8: static mode needs the family's calibration inputs")

        def quantize(graph: bytes, example: tuple) -> bytes:
            calibration = draw(bundle, example, config.calibration_images, config.seed) if draw and static else None
            return quantize_graph(graph, config, calibration)

        model = ExportedModel(bundle.model, ort_session, "onnxruntime-int8", transform=quantize)
        mode = "static" if static else "dynamic"
        return default_runner(bundle, model, {"runtime": "onnxruntime", "int8": mode, "flops_basis": "reference"})
