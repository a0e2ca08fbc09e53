"""`quant.ptq.diffusion_timestep_calib`: PTQ4DM (Shang et al., arXiv 2211.15736, catalogue row 20).

Post-training W8A8 quantization of a diffusion denoiser, calibrated the way the paper found a
multi-step model needs:
- **calibration inputs come from the denoising process itself** (not training images or pure
  noise): full-precision guided DDIM trajectories are run and their intermediate x_t kept, both
  with the class label and with the null label (the guidance branches);
- **Normally Distributed Time-step Calibration (NDTC)**: the time steps of those inputs are drawn
  from N(μ·T, σ·T) (`time_mean`, `time_std` as fractions of the T = 1 000 training steps),
  clipped to the schedule, so calibration covers all noise levels with more weight where the
  activation ranges matter;
- **MSE as the calibration metric**: every activation's clipping range is the one of
  `candidates` shrink factors of its observed range that minimises the quantise–dequantise
  error on the calibration activations.
Every Conv2d and Linear except the first and last layer becomes a real int8 module
(`torch.ao.nn.quantized`: per-channel int8 weights, per-tensor uint8 activations, x86/fbgemm
kernels); attention's two matmuls stay fp32. Calibration is setup time and cached.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.ao.nn.quantized as nnq
from torch import nn

from executors.caching import cached_tensors
from executors.families import default_runner
from executors.families.diffusion.sampler import TRAIN_TIMESTEPS, Settings
from executors.methods.diffusion.engine import base_of, reference_trajectory
from executors.registry import Method, MethodConfig, bounded, register_method

KEPT_FP32 = ("conv_in", "conv_out", "pos_embed.proj", "proj_out_2")  # the first and last layers
SAMPLED_VALUES = 1 << 16


@dataclass(frozen=True)
class PTQ4DMConfig(MethodConfig):
    samples: int = bounded(64, 4, 4096)  # calibration time steps (each with its label and the null label)
    time_mean: float = bounded(0.4, 0.0, 1.0)  # NDTC mean, a fraction of T
    time_std: float = bounded(0.5, 0.01, 2.0)  # NDTC standard deviation, a fraction of T
    guidance_scale: float = bounded(3.0, 1.0, 20.0)  # of the trajectories that produce the inputs
    trajectory_steps: int = bounded(25, 2, 1000)
    candidates: int = bounded(20, 1, 200)  # clipping ranges tried by the MSE search
    seed: int = 0
    version: int = 1


class StaticInt8(nn.Module):
    """A quantized Conv2d/Linear with a calibrated input grid: quantize, int8 kernel, dequantize."""

    def __init__(self, quantized: nn.Module, scale: float, zero_point: int):
        super().__init__()
        self.quantized, self.scale, self.zero_point = quantized, scale, zero_point

    def forward(self, x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch flags quantized tensor creation as deprecated; it still works
            return self.quantized(torch.quantize_per_tensor(x, self.scale, self.zero_point, torch.quint8)).dequantize()


def ndtc_inputs(model, config: PTQ4DMConfig) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(x_t, t, labels) batches: x_t from FP trajectories at NDTC-drawn time steps, cond and null labels."""
    generator = torch.Generator().manual_seed(config.seed)
    wanted = (torch.randn(config.samples, generator=generator) * config.time_std + config.time_mean) * TRAIN_TIMESTEPS
    wanted = wanted.round().clamp(0, TRAIN_TIMESTEPS - 1)
    labels = torch.arange(config.samples) % model.info.classes
    settings = Settings(config.trajectory_steps, config.guidance_scale, "ddim")
    path = reference_trajectory(model, labels, settings, config.seed)
    grid = torch.tensor(path.timesteps, dtype=torch.float)
    nearest = (grid[None, :] - wanted[:, None]).abs().argmin(dim=1)
    x = torch.stack([path.inputs[int(k)][i] for i, k in enumerate(nearest)])
    t = grid[nearest].long()
    null = torch.full_like(labels, model.info.null_class)
    return [(x, t, labels), (x, t, null)]


def mse_range(values: torch.Tensor, candidates: int) -> tuple[float, int]:
    """The uint8 (scale, zero point) whose clipping range minimises the quantisation MSE on `values`."""
    low, high = min(values.min().item(), 0.0), max(values.max().item(), 0.0)
    best, best_error = (max(high - low, 1e-8) / 255, 0), float("inf")
    for shrink in torch.linspace(1.0, 0.3, candidates).tolist():
        lo, hi = low * shrink, high * shrink
        scale = max(hi - lo, 1e-8) / 255
        zero = int(round(-lo / scale))
        rebuilt = (torch.clamp(torch.round(values / scale) + zero, 0, 255) - zero) * scale
        error = (rebuilt - values).pow(2).mean().item()
        if error < best_error:
            best, best_error = (scale, zero), error
    return best


def layers(net: nn.Module) -> dict[str, nn.Module]:
    return {
        name: module
        for name, module in net.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not name.endswith(KEPT_FP32)
    }


@torch.no_grad()
def calibrate(model, config: PTQ4DMConfig) -> tuple[dict, dict]:
    """Observed inputs and outputs of every quantized layer on the NDTC set → MSE-searched grids."""
    chosen = layers(model.net.net)
    seen: dict[str, list[list[torch.Tensor]]] = {name: [[], []] for name in chosen}
    generator = torch.Generator().manual_seed(config.seed + 1)

    def keep(name):
        def hook(_module, inputs, output):
            for slot, tensor in ((0, inputs[0]), (1, output)):
                flat = tensor.detach().flatten()
                pick = torch.randint(0, flat.numel(), (min(flat.numel(), SAMPLED_VALUES),), generator=generator)
                seen[name][slot].append(flat[pick])

        return hook

    hooks = [module.register_forward_hook(keep(name)) for name, module in chosen.items()]
    try:
        for x, t, labels in ndtc_inputs(model, config):
            model.net(x, t, labels)
    finally:
        for hook in hooks:
            hook.remove()
    grids = {}
    for name, (inputs, outputs) in seen.items():
        in_scale, in_zero = mse_range(torch.cat(inputs), config.candidates)
        out_scale, out_zero = mse_range(torch.cat(outputs), config.candidates)
        grids[name] = torch.tensor([in_scale, in_zero, out_scale, out_zero], dtype=torch.float64)
    return grids, {"layers": len(grids), "calibration_inputs": 2 * config.samples}


def quantized_copy(module: nn.Conv2d | nn.Linear, grid: torch.Tensor) -> StaticInt8:
    in_scale, in_zero, out_scale, out_zero = grid.tolist()
    weight = module.weight.detach()
    axes = tuple(range(1, weight.dim()))
    scales = (weight.abs().amax(dim=axes) / 127).clamp_min(1e-8).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qweight = torch.quantize_per_channel(weight, scales, torch.zeros(len(scales), dtype=torch.long), 0, torch.qint8)
    quantized: Any
    if isinstance(module, nn.Conv2d):
        quantized = nnq.Conv2d(
            module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
            module.dilation, module.groups, module.bias is not None,
        )  # fmt: skip
    else:
        quantized = nnq.Linear(module.in_features, module.out_features, module.bias is not None)
    quantized.set_weight_bias(qweight, None if module.bias is None else module.bias.detach())
    quantized.scale, quantized.zero_point = float(out_scale), int(out_zero)
    return StaticInt8(quantized, float(in_scale), int(in_zero))


def quantize(model, config: PTQ4DMConfig):
    key = dataclasses.asdict(config)
    cached = cached_tensors("diffusion-ptq4dm", model.net, key, lambda: calibrate(model, config))
    net = copy.deepcopy(model.net)
    for name in layers(net.net):
        parent_name, _, child = name.rpartition(".")
        parent = net.net.get_submodule(parent_name) if parent_name else net.net
        setattr(parent, child, quantized_copy(getattr(parent, child), cached.tensors[name]))
    return model.with_net(net), {
        "setup_calibration_s": round(cached.build_s, 2),
        "quantized_layers": len(cached.tensors),
    }


@register_method(
    "quant.ptq.diffusion_timestep_calib",
    PTQ4DMConfig,
    category="quantization",
    families=("diffusion",),
    changes=("weights", "weight_bytes", "outputs"),
    paper="Post-training Quantization on Diffusion Models (PTQ4DM)",
    arxiv="2211.15736",
    catalogue_row=20,
)
class PTQ4DM(Method):
    order = 10  # a weight transform: first
    composes_with = frozenset(
        {"diff.cache.static", "diff.cache.harmonica_router", "diff.guidance.adaptive", "diff.guidance.linear_ag",
         "diff.steps.dpm_solver", "diff.steps.evo_search"}
    )  # fmt: skip
    requirements = {"devices": ["cpu"]}

    def supports(self, bundle, device):
        if "denoiser" not in bundle.capabilities:
            return "calibrates diffusion denoisers"
        if device.type != "cpu":
            return "torch's static int8 conv/linear kernels (x86/fbgemm) run on CPU only"
        engines = torch.backends.quantized.supported_engines
        return None if "x86" in engines or "fbgemm" in engines else "no x86/fbgemm quantized engine in this torch build"

    def apply(self, bundle, config):
        model, stats = quantize(base_of(bundle.model), config)
        return default_runner(bundle, model, stats)
