"""`deploy.openvino`: the exported graph compiled and run by OpenVINO's CPU plugin.

The second CPU runtime a user picks beside ONNX Runtime (the deployment study's runtime step,
catalogue row 12): OpenVINO reads the ONNX graph, compiles it for the CPU device (its own graph
transformations and kernels, fp32 here), with as many inference threads as the node's torch
thread count and the latency performance hint. Reading and compiling are setup time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from executors.families import default_runner
from executors.methods.deploy.export import ExportedModel, supports_export
from executors.registry import Method, MethodConfig, register_method

HINTS = ("LATENCY", "THROUGHPUT")


@dataclass(frozen=True)
class OpenVinoConfig(MethodConfig):
    hint: str = "LATENCY"  # OpenVINO performance hint
    version: int = 1


def openvino_compiled(graph: bytes, hint: str):
    import openvino as ov

    if hint not in HINTS:
        raise ValueError(f"hint must be one of {HINTS}, not {hint!r}")
    core = ov.Core()
    model = core.read_model(model=graph)
    # fp32 said explicitly: on a CPU with AVX-512 BF16 or AMX the plugin would otherwise run in bf16,
    # so the same method would change precision (and outputs, by ~1e-3) with the node it lands on.
    config = {
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "PERFORMANCE_HINT": hint,
        "INFERENCE_PRECISION_HINT": "f32",
    }
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def run(arrays: list) -> list:
        results = request.infer(arrays)
        return [results[compiled.output(0)]]

    return run


@register_method(
    "deploy.openvino",
    OpenVinoConfig,
    category="runtime",
    families=("vision", "encoder"),
    changes=("weights", "outputs"),
    paper="Deployment recipe of the Jetson wildfire study (runtime step): OpenVINO, CPU plugin",
    catalogue_row=12,
    lossless=False,
)
class OpenVino(Method):
    order = 80
    composes_with = frozenset({"baseline"})

    def supports(self, bundle, device):
        import importlib.util

        if device.type != "cpu":
            return "runs OpenVINO's CPU plugin"
        if importlib.util.find_spec("openvino") is None:
            return "needs the openvino package (pip install openvino)"
        return supports_export(bundle)

    def apply(self, bundle, config):
        model = ExportedModel(bundle.model, lambda graph: openvino_compiled(graph, config.hint), "openvino")
        return default_runner(bundle, model, {"runtime": "openvino", "flops_basis": "reference"})
