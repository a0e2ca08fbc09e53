"""What the inputs of a model's linear layers look like on calibration text.

Per-tensor dynamic int8 takes one scale for a whole forward's input; when one token's input is
thousands of times larger than the others' (the "massive activations" of pretrained LMs such as
SmolLM2, whose first token reaches |x| ≈ 3 000 at `layers.11.feed_forward.w2` against a typical
token's ≈ 2), that token sets the scale and every other token's input rounds to a handful of
levels or to zero. The statistics here let a family describe that risk as a model descriptor
(`activation_outlier_ratio`) and let outlier-aware quantisers pick per-channel smoothing factors
and the layers to keep in floating point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InputStats:
    """One linear layer's inputs over the calibration tokens."""

    channel_absmax: torch.Tensor  # [in_features]: max |x| per input channel (SmoothQuant's statistic)
    token_ratio: float  # largest token's max |x| / the median token's max |x|

    @property
    def typical_levels(self) -> float:
        """Levels of a signed 8-bit per-tensor grid left to the median token (127 for a flat input)."""
        return 127.0 / self.token_ratio


def linear_input_stats(model: nn.Module, inputs: torch.Tensor, skip: tuple[str, ...] = ("output",)) -> dict:
    """{linear name: InputStats} from one forward over `inputs` (the family's calibration windows).

    `skip` names layers left out (the LM head, which stays in float in every quantiser here)."""
    channel: dict[str, torch.Tensor] = {}
    tokens: dict[str, list[torch.Tensor]] = {}

    def record(name: str):
        def hook(module, args, output):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).float()
            top = x.amax(0)
            channel[name] = top if name not in channel else torch.maximum(channel[name], top)
            tokens.setdefault(name, []).append(x.amax(-1))

        return hook

    handles = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name not in skip
    ]
    try:
        with torch.inference_mode():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    stats = {}
    for name, top in channel.items():
        per_token = torch.cat(tokens[name])
        ratio = (per_token.max() / per_token.median().clamp_min(1e-12)).item()
        stats[name] = InputStats(top, ratio)
    return stats


def outlier_ratio(stats: dict) -> float:
    """The model's worst layer: how far one token's input exceeds the typical token's."""
    return max((s.token_ratio for s in stats.values()), default=1.0)
