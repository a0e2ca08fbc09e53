"""`quant.int8_outlier`: W8A8 dynamic int8 that survives activation outliers.

Plain `quant.int8_dynamic` quantises each linear's input with one scale per forward. A
pretrained LM's first token carries "massive activations" (Sun et al., arXiv 2402.17762): on
SmolLM2-135M the input of `layers.11.feed_forward.w2` reaches |x| ≈ 2 900 on token 0 against a
median token maximum of ≈ 2, so every other token of a prefill or a perplexity window rounds to
zero there, and held-out perplexity goes from 12.2 to 39.6 (docs/low-bit.md). Three remedies
from the literature, each a knob, measured against each other in docs/low-bit.md:

- `per_token`: one activation scale per token (row), as LLM.int8() and ZeroQuant quantise
  activations. Built on the same fbgemm kernel as plain int8: each row is divided by its own
  max |x| before the kernel's per-tensor quantisation and the output row multiplied back
  (exact for a linear map; two elementwise ops per layer).
- `smooth_alpha` > 0: SmoothQuant (Xiao et al., arXiv 2211.10438): per input channel
  s_j = max|x_j|^α / max|W_j|^(1−α) from calibration activations, the input divided by s and
  the weight's columns multiplied by it, which moves the outliers' range into the weights.
  Deviation: the paper folds 1/s into the previous LayerNorm or linear; here it is one multiply
  on the layer's input, which keeps the method independent of the model's block layout.
- `keep_outlier_layers`: layers whose calibration inputs have one token above `outlier_bound`
  times the median token's maximum stay in fp32 (LLM.int8()'s "keep the outliers in higher
  precision", per layer instead of per channel, since torch has no mixed int8/fp16 GEMM on CPU).

The default is per-token scales after SmoothQuant smoothing at α = 0.5, the best of the three on
SmolLM2 (perplexity +1.8 % against plain int8's +214 %; each alone: per token +11 %, smoothing
+33–47 %, fp32 outlier layers +46 %). Weights are int8 per output channel (symmetric); the LM
head stays fp32 as in plain int8. torch's x86 dynamic kernel quantises its input with 7 bits
(`reduce_range`), so a per-token row keeps 127 levels of its own range.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from executors.activations import linear_input_stats
from executors.families import default_runner, family_hook
from executors.methods.quant.int8_dynamic import int8_engine_missing
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class Int8OutlierConfig(MethodConfig):
    per_token: bool = True
    smooth_alpha: float = bounded(0.5, 0.0, 1.0)  # SmoothQuant migration strength; 0 = no smoothing
    keep_outlier_layers: bool = False
    outlier_bound: float = bounded(16.0, 1.0, 1e6)  # token ratio above which a layer stays fp32
    calibration_windows: int = bounded(4, 1, 256)
    calibration_len: int = bounded(128, 8, 4096)
    version: int = 1


class OutlierInt8Linear(nn.Module):
    """torch's dynamic int8 Linear behind an optional smoothing multiply and per-token row scales."""

    inverse_smooth: torch.Tensor | None  # buffers
    bias: torch.Tensor | None

    def __init__(
        self, int8: nn.Module, bias: torch.Tensor | None, inverse_smooth: torch.Tensor | None, per_token: bool
    ):
        super().__init__()
        self.int8, self.per_token = int8, per_token  # int8: a bias-free dynamic int8 Linear
        self.register_buffer("inverse_smooth", inverse_smooth)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, smooth: torch.Tensor | None, per_token: bool) -> OutlierInt8Linear:
        """int8 weights per output channel (of the smoothed weight, W·diag(s), when `smooth` is given)."""
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
        from torch.ao.quantization import per_channel_dynamic_qconfig

        float_linear = nn.Linear(linear.in_features, linear.out_features, bias=False)
        with torch.no_grad():
            weight = linear.weight.detach().float()
            float_linear.weight.copy_(weight if smooth is None else weight * smooth[None, :])
        float_linear.qconfig = per_channel_dynamic_qconfig  # type: ignore[assignment]  # eager-mode quantization reads it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eager-mode quantization warns it is deprecated; it works
            int8 = DynamicInt8Linear.from_float(float_linear)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(int8, bias, None if smooth is None else (1.0 / smooth).float(), per_token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverse_smooth is not None:
            x = x * self.inverse_smooth
        if self.per_token:
            rows = x.abs().amax(-1, keepdim=True).clamp_min(1e-12)
            y = self.int8(x / rows) * rows
        else:
            y = self.int8(x)
        return y if self.bias is None else y + self.bias


def smoothing_factors(linear: nn.Linear, channel_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's s_j = max|x_j|^α / max|W_j|^(1−α), clamped away from 0."""
    weight_max = linear.weight.detach().abs().amax(0).float().clamp_min(1e-5)
    return (channel_absmax.clamp_min(1e-5) ** alpha / weight_max ** (1 - alpha)).clamp_min(1e-5)


def quantize_outlier_aware(model: nn.Module, stats: dict, config: Int8OutlierConfig) -> tuple[nn.Module, list[str]]:
    """A copy with every calibrated linear in int8 (or kept fp32); returns it and the kept layers."""
    quantized = copy.deepcopy(model)
    kept = []
    for name, module in list(quantized.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, nn.Linear) or full not in stats:
                continue
            if config.keep_outlier_layers and stats[full].token_ratio > config.outlier_bound:
                kept.append(full)
                continue
            smooth = (
                smoothing_factors(child, stats[full].channel_absmax, config.smooth_alpha)
                if config.smooth_alpha > 0
                else None
            )
            setattr(module, child_name, OutlierInt8Linear.from_linear(child, smooth, config.per_token))
    return quantized, kept


def calibration_stats(bundle, config: Int8OutlierConfig) -> dict:
    length = min(config.calibration_len, bundle.spec.context or config.calibration_len)
    calibration = family_hook(bundle, "calibration")
    if calibration is None:
        raise ValueError(f"quant.int8_outlier: the {bundle.family} family offers no calibration text")
    windows = calibration(bundle, config.calibration_windows, length, 0)
    if len(windows) == 0:
        raise ValueError(f"quant.int8_outlier: no calibration text of {length} tokens")
    return linear_input_stats(bundle.model, windows)


@register_method(
    "quant.int8_outlier",
    Int8OutlierConfig,
    category="quantization",
    families=("lm", "encoder"),
    changes=("weights", "weight_bytes", "outputs"),
    paper="SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models; "
    "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale (per-token scales, outliers kept)",
    arxiv="2211.10438",
    catalogue_row=None,
    lossless=False,
)
class Int8Outlier(Method):
    order = 10  # a weight transform: before compilation and decoding strategies
    composes_with = frozenset({"baseline", "sys.compile", "lm.spec.swift", "lm.spec.medusa", "lm.parallel.jacobi",
                               "lm.spec.parallel_prompt"})  # fmt: skip
    requirements = {"devices": ["cpu"]}

    def supports(self, bundle, device):
        if "linear_layers" not in bundle.capabilities:
            return "quantizes nn.Linear layers; this model declares none"
        if family_hook(bundle, "calibration") is None or not bundle.calibration_texts:
            return "calibrates activation statistics; this model's family offers no calibration text"
        if device.type != "cpu":
            return "torch's dynamic int8 linear kernels run on CPU only"
        return int8_engine_missing()

    def apply(self, bundle, config):
        stats = calibration_stats(bundle, config)
        quantized, kept = quantize_outlier_aware(bundle.model, stats, config)
        return default_runner(
            bundle,
            quantized,
            {
                "fp32_layers": kept,
                "int8_layers": len(stats) - len(kept),
                "activation_scales": "per token" if config.per_token else "per tensor",
                "smooth_alpha": config.smooth_alpha,
            },
        )
