"""`deploy.onnxruntime`: the model exported to ONNX and run by ONNX Runtime's CPU execution provider.

A runtime a user picks on CPU (the Jetson deployment study, catalogue row 12, picks TensorRT on
its GPU; ONNX Runtime is the CPU counterpart): the graph is exported with torch's dynamo
exporter, ONNX Runtime applies its graph optimisations (constant folding, operator fusion) at
session creation, and every call runs the session with the node's torch thread count. Export and
session creation are setup time (the first call). The same method serves the encoder family:
a MiniLM embeds through its exported graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from executors.families import default_runner
from executors.methods.deploy.export import ExportedModel, supports_export
from executors.registry import Method, MethodConfig, register_method

OPTIMIZATION_LEVELS = ("basic", "extended", "all")


@dataclass(frozen=True)
class OnnxRuntimeConfig(MethodConfig):
    optimization: str = "all"  # ONNX Runtime graph optimisation level
    version: int = 1


def ort_session(graph: bytes, optimization: str = "all"):
    import onnxruntime as ort

    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization must be one of {OPTIMIZATION_LEVELS}, not {optimization!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the hardware class being measured
    options.inter_op_num_threads = 1
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda arrays: session.run(None, dict(zip(names, arrays, strict=True)))


def supports_ort(bundle, device) -> str | None:
    import importlib.util

    if device.type != "cpu":
        return "runs ONNX Runtime's CPU execution provider"
    if importlib.util.find_spec("onnxruntime") is None:
        return "needs the onnxruntime package (pip install onnxruntime)"
    return supports_export(bundle)


@register_method(
    "deploy.onnxruntime",
    OnnxRuntimeConfig,
    category="runtime",
    families=("vision", "encoder"),
    changes=("weights", "outputs"),
    paper="Deployment recipe of the Jetson wildfire study (runtime step): ONNX Runtime, CPU execution provider",
    catalogue_row=12,
    lossless=False,
)
class OnnxRuntime(Method):
    order = 80  # takes the finished torch model: after weight transforms and token methods
    composes_with = frozenset({"baseline"})

    def supports(self, bundle, device):
        return supports_ort(bundle, device)

    def apply(self, bundle, config):
        model = ExportedModel(bundle.model, lambda graph: ort_session(graph, config.optimization), "onnxruntime")
        return default_runner(bundle, model, {"runtime": "onnxruntime", "flops_basis": "reference"})
