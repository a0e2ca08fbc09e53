"""`quant.q_hyvit`: Q-HyViT — post-training quantization of hybrid ViTs by block reconstruction,
with the conv/attention bridge blocks reconstructed as a whole.

Paper: Lee et al., "Q-HyViT: Post-Training Quantization of Hybrid Vision Transformers with Bridge
Block Reconstruction for IoT Systems" (arXiv 2303.12557, catalogue row 18). Mechanism as the
paper states it, on a calibration set of training-distribution images:

1. Per-layer scheme: hybrid models mix batch-norm/conv and layer-norm/attention activations
   with very different ranges, so every layer's input quantizer picks its granularity
   (per tensor or per channel) and scheme (symmetric or asymmetric) by the layer-output error
   it causes on calibration inputs; weights are symmetric per output channel. Asymmetric codes
   live in [0, 2^b − 1] with the zero point inside, so the zero point cannot overflow.
2. Block reconstruction (BRECQ lineage): the model is quantized unit by unit in order — the
   stem, every block, the head — each unit fed the already-quantized model's output of the
   previous unit and fitted to the fp32 unit's output under a Fisher-weighted (squared output
   gradient of the task loss: a diagonal Hessian estimate) error, by learning each weight's
   rounding (AdaRound: h(V) with a rounding regulariser annealed from β = 20 to 2) and the
   activation steps (LSQ).
3. Bridge blocks — a block that holds both convolutions and attention (a MobileViT block:
   local convs, unfold, transformer, fold, fusion) — are reconstructed as one unit, and their
   objective also scores the output of the unit that follows them (run in fp32), so the
   hand-over between conv and attention representations is fitted end to end rather than
   layer by layer. A plain ViT or CNN has no bridge blocks (`bridge_blocks: 0` in its records).

On CPU the quantized model runs as fake quantization in fp32 (quality of W8A8 / W6A6 codes, not
int8 speed). Calibration is seeded and cached as safetensors (setup time).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from executors.caching import cached_tensors
from executors.families import default_runner
from executors.methods.distill.kd import training_images
from executors.methods.quant.layers import (
    FakeQuant,
    Layer,
    QuantLayer,
    quantizable,
    rectified_sigmoid,
    weight_quantizer,
)
from executors.registry import Method, MethodConfig, bounded, register_method
from executors.training import frozen

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
SCHEMES = ((False, False), (True, False), (False, True), (True, True))  # (asymmetric, per channel)


@dataclass(frozen=True)
class QHyVitConfig(MethodConfig):
    w_bits: int = bounded(8, 2, 8)
    a_bits: int = bounded(8, 2, 8)
    calibration_images: int = bounded(128, 8, 4096)
    iterations: int = bounded(80, 0, 20_000)  # reconstruction steps per unit
    batch: int = bounded(32, 1, 512)
    lr_rounding: float = bounded(1e-3, 0.0, 1.0)
    lr_step: float = bounded(4e-5, 0.0, 1.0)
    rounding_weight: float = bounded(0.01, 0.0, 10.0)
    seed: int = 0
    version: int = 1


def units(classifier) -> list[list[nn.Module]]:
    return [classifier.embed_modules(), *[[b] for b in classifier.blocks()], classifier.head_modules()]


def run_unit(classifier, index: int, hidden: torch.Tensor) -> torch.Tensor:
    blocks = classifier.blocks()
    if index == 0:
        return classifier.embed(hidden)
    if index <= len(blocks):
        return blocks[index - 1](hidden)
    return classifier.head(classifier.read_out(hidden))


def is_bridge(modules: list[nn.Module]) -> bool:
    """A unit holding convolutions and self-attention (transformers names its attention modules *Attention)."""
    inner = [m for module in modules for m in module.modules()]
    return any(isinstance(m, nn.Conv2d) for m in inner) and any(type(m).__name__.endswith("Attention") for m in inner)


def fp_trace(classifier, pixels: torch.Tensor, labels: torch.Tensor, chunk: int = 32):
    """Every unit's fp32 input and output, and the squared gradient of the task loss at each output
    (normalised to mean 1 per unit): the diagonal Fisher weights of the reconstruction error."""
    inputs, outputs, grads = [], [], []
    for start in range(0, len(pixels), chunk):
        with torch.inference_mode(False), torch.enable_grad(), frozen(classifier):
            hidden = pixels[start : start + chunk].clone().requires_grad_(True)
            seen, made = [], []
            for index in range(len(units(classifier))):
                seen.append(hidden.detach())
                hidden = run_unit(classifier, index, hidden)
                hidden.retain_grad()
                made.append(hidden)
            F.cross_entropy(hidden, labels[start : start + chunk], reduction="sum").backward()
        inputs.append(seen)
        outputs.append([m.detach() for m in made])
        grads.append([(m.grad if m.grad is not None else torch.zeros_like(m)).detach() ** 2 for m in made])
    joined = [[torch.cat(parts) for parts in zip(*rows, strict=True)] for rows in (inputs, outputs, grads)]
    fisher = [g / g.mean().clamp_min(1e-30) for g in joined[2]]
    return joined[0], joined[1], fisher


def choose_scheme(layer: Layer, samples: torch.Tensor, config: QHyVitConfig) -> tuple[bool, bool]:
    """The input quantizer (asymmetric?, per channel?) with the smallest layer-output error."""
    axis = 1 if isinstance(layer, nn.Conv2d) else -1
    reference = layer(samples)
    best, best_error = SCHEMES[0], math.inf
    for asymmetric, per_channel in SCHEMES:
        channels = samples.shape[axis] if per_channel else 0
        quant = FakeQuant(config.a_bits, channels=channels, axis=axis, asymmetric=asymmetric)
        quant.init_from(samples)
        trial = QuantLayer(layer, weight_quantizer(layer, config.w_bits), quant)
        error = F.mse_loss(trial(samples), reference).item()
        if error < best_error:
            best, best_error = (asymmetric, per_channel), error
    return best


def unit_layers(model: nn.Module, modules: list[nn.Module]) -> list[tuple[nn.Module, str, Layer]]:
    """(parent, attribute, layer) of the unit's convs and linears, in model order — a unit's module
    may itself be one (a ViT's classifier), so they are found from the whole model."""
    inside = {id(m) for module in modules for m in module.modules()}
    return [(parent, name, layer) for parent, name, layer in quantizable(model) if id(layer) in inside]


def quantize_unit(
    model: nn.Module, modules: list[nn.Module], unit_input_samples: dict[nn.Module, torch.Tensor], config: QHyVitConfig
) -> list:
    """Replaces each conv/linear of the unit by a QuantLayer with its chosen input scheme."""
    chosen = []
    for parent, name, layer in unit_layers(model, modules):
        asymmetric, per_channel = choose_scheme(layer, unit_input_samples[layer], config)
        axis = 1 if isinstance(layer, nn.Conv2d) else -1
        samples = unit_input_samples[layer]
        quant = FakeQuant(
            config.a_bits, channels=samples.shape[axis] if per_channel else 0, axis=axis, asymmetric=asymmetric
        )
        quant.init_from(samples)
        weights = weight_quantizer(layer, config.w_bits)
        wrapped = QuantLayer(layer, weights, quant)
        weight, step = layer.weight.detach(), weights._shaped(weights.current_step(), layer.weight).detach()
        fraction = (weight / step - torch.floor(weight / step)).clamp(0.01, 0.99)
        # AdaRound's start: h(V) equals the fractional part, i.e. rounding to nearest in expectation
        wrapped.rounding = nn.Parameter(-torch.log((1.1 - (-0.1)) / (fraction - (-0.1)) - 1))
        setattr(parent, name, wrapped)
        chosen.append((wrapped, asymmetric, per_channel))
    return chosen


def layer_inputs(
    model: nn.Module, modules: list[nn.Module], run, hidden: torch.Tensor, limit: int = 4
) -> dict[nn.Module, torch.Tensor]:
    """The fp32 inputs every conv/linear of a unit sees on (a few of) the calibration images."""
    seen: dict[nn.Module, torch.Tensor] = {}
    layers = [layer for _, _, layer in unit_layers(model, modules)]
    hooks = [layer.register_forward_pre_hook(lambda m, args: seen.setdefault(m, args[0].detach())) for layer in layers]
    try:
        with torch.no_grad():
            run(hidden[:limit])
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def harden(layers) -> None:
    with torch.no_grad():
        for layer, _, _ in layers:
            layer.rounding.copy_(torch.where(rectified_sigmoid(layer.rounding) >= 0.5, 10.0, -10.0))
            layer.rounding.requires_grad_(False)


def reconstruct(quantized, teacher, bundle, config: QHyVitConfig) -> dict:
    pixels, labels = training_images(bundle)(config.calibration_images, 0, torch.Generator().manual_seed(config.seed))
    fp_inputs, fp_outputs, fisher = fp_trace(teacher, pixels, labels)
    hidden, schemes, bridges = pixels, [], 0
    generator = torch.Generator().manual_seed(config.seed)
    count = len(fp_inputs)
    for index, modules in enumerate(units(quantized)):
        bridge = is_bridge(modules)
        bridges += bridge
        samples = layer_inputs(quantized, modules, lambda h, i=index: run_unit(quantized, i, h), hidden)
        layers = quantize_unit(quantized, modules, samples, config)
        schemes += [[asym, per_channel] for _, asym, per_channel in layers]
        rounding = [layer.rounding for layer, _, _ in layers]
        steps = [layer.input_quant.step for layer, _, _ in layers] + [layer.weight_quant.step for layer, _, _ in layers]
        optimizer = torch.optim.Adam(
            [{"params": rounding, "lr": config.lr_rounding}, {"params": steps, "lr": config.lr_step}]
        )
        follow = bridge and index + 1 < count
        with torch.inference_mode(False), torch.enable_grad():
            for step in range(config.iterations):
                pick = torch.randint(len(pixels), (config.batch,), generator=generator)
                out = run_unit(quantized, index, hidden[pick])
                loss = (fisher[index][pick] * (out - fp_outputs[index][pick]) ** 2).sum() / config.batch
                if follow:  # the bridge's output as the next unit (still fp32) sees it
                    nxt = run_unit(teacher, index + 1, out)
                    error = (fisher[index + 1][pick] * (nxt - fp_outputs[index + 1][pick]) ** 2).sum()
                    loss = loss + error / config.batch
                warm = config.iterations // 5
                if step >= warm and rounding:
                    beta = 20 + (2 - 20) * (step - warm) / max(1, config.iterations - warm)
                    h = [rectified_sigmoid(v) for v in rounding]
                    loss = loss + config.rounding_weight * sum((1 - (2 * x - 1).abs() ** beta).sum() for x in h)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        harden(layers)
        with torch.no_grad():
            hidden = torch.cat([run_unit(quantized, index, chunk) for chunk in hidden.split(64)])
    return {"schemes": schemes, "bridge_blocks": bridges, "units": count}


@register_method(
    "quant.q_hyvit",
    QHyVitConfig,
    category="quantization",
    families=("vision",),
    changes=("weights", "outputs"),
    paper="Q-HyViT: Post-Training Quantization of Hybrid Vision Transformers with Bridge Block Reconstruction",
    arxiv="2303.12557",
    catalogue_row=18,
    lossless=False,
)
class QHyVit(Method):
    order = 10
    composes_with = frozenset({"baseline"})

    def supports(self, bundle, device):
        if "stage_features" not in bundle.capabilities:
            return "reconstructs block by block: the model must expose its stages"
        return None

    def apply(self, bundle, config):
        import copy

        teacher = bundle.model
        quantized = copy.deepcopy(teacher).eval().requires_grad_(False)

        def build():
            meta = reconstruct(quantized, teacher, bundle, config)
            return quantized.state_dict(), meta

        cached = cached_tensors(f"q-hyvit-v{CACHE_FORMAT}", teacher, asdict(config), build)
        if cached.hit:
            restore(quantized, cached.meta["schemes"], config)
            quantized.load_state_dict(cached.tensors)
        stats = {
            "w_bits": config.w_bits,
            "a_bits": config.a_bits,
            "bridge_blocks": cached.meta["bridge_blocks"],
            "asymmetric_inputs": sum(a for a, _ in cached.meta["schemes"]),
            "per_channel_inputs": sum(c for _, c in cached.meta["schemes"]),
            "int8_kernels": False,
            "flops_basis": "reference",
            "setup_calibration_s": cached.build_s,
        }
        return default_runner(bundle, quantized, stats)


def restore(model: nn.Module, schemes: list, config: QHyVitConfig) -> None:
    """The QuantLayer structure a cached calibration was saved from (its values come from the file)."""
    found = [entry for modules in units(model) for entry in unit_layers(model, modules)]
    for (parent, name, layer), (asymmetric, per_channel) in zip(found, schemes, strict=True):
        axis = 1 if isinstance(layer, nn.Conv2d) else -1
        channels = (layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features) if per_channel else 0
        wrapped = QuantLayer(
            layer,
            weight_quantizer(layer, config.w_bits),
            FakeQuant(config.a_bits, channels=channels, axis=axis, asymmetric=asymmetric),
        )
        wrapped.rounding = nn.Parameter(torch.zeros_like(layer.weight), requires_grad=False)
        setattr(parent, name, wrapped)
