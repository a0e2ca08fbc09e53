"""`train.growth.multilevel_vcycle`: the 2-level V-cycle of Zou et al., "A Multi-Level Framework
for Accelerating Training Transformer Models" (ICLR 2024).

Three operators: coalescing merges neighbouring neurons and layers into a smaller model,
de-coalescing maps it back to the full size, interpolation mixes the de-coalesced weights with
the full model's own to break the symmetry the duplication created. The V-cycle: train the full
model briefly, coalesce, train the small model (cheaper steps, fast early progress), de-coalesce,
interpolate W = α·W_up + (1 − α)·W_before, and train the full model for the rest.
Coalescing here is depth (adjacent block pairs averaged) and FFN width (neuron pairs: their
input rows averaged, their output columns summed, so a merged pair computes what the pair did on
average); de-coalescing duplicates blocks and rows and halves the duplicated output columns. The
paper also coalesces attention heads and the model width — not done here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from executors.families.training.engine import Plan, Stage, trainer
from executors.methods.train.growth import depth, set_layers
from executors.registry import Method, MethodConfig, bounded, register_method


def _average(blocks: list[nn.Module]) -> nn.Module:
    merged = copy.deepcopy(blocks[0])
    with torch.no_grad():
        for name, tensor in merged.state_dict().items():
            tensor.copy_(torch.stack([b.state_dict()[name] for b in blocks]).mean(0))
    return merged


@torch.no_grad()
def _narrow_ffn(block: Any) -> None:
    ffn = block.feed_forward
    for name in ("w1", "w3"):  # rows are hidden neurons: pairs averaged
        old = getattr(ffn, name)
        new = nn.Linear(old.in_features, old.out_features // 2, bias=False)
        new.weight.copy_(old.weight.view(old.out_features // 2, 2, -1).mean(1))
        setattr(ffn, name, new)
    old = ffn.w2  # columns are hidden neurons: pairs summed
    new = nn.Linear(old.in_features // 2, old.out_features, bias=False)
    new.weight.copy_(old.weight.view(old.out_features, old.in_features // 2, 2).sum(2))
    ffn.w2 = new


@torch.no_grad()
def _widen_ffn(block: Any) -> None:
    ffn = block.feed_forward
    for name in ("w1", "w3"):
        old = getattr(ffn, name)
        new = nn.Linear(old.in_features, old.out_features * 2, bias=False)
        new.weight.copy_(old.weight.repeat_interleave(2, dim=0))
        setattr(ffn, name, new)
    old = ffn.w2
    new = nn.Linear(old.in_features * 2, old.out_features, bias=False)
    new.weight.copy_(old.weight.repeat_interleave(2, dim=1) / 2)
    ffn.w2 = new


def coalesce(model: Any) -> Any:
    blocks = list(model.layers)
    merged = [_average(blocks[i : i + 2]) for i in range(0, len(blocks), 2)]
    for block in merged:
        _narrow_ffn(block)
    return set_layers(model, merged)


def decoalesce(model: Any) -> Any:
    blocks = []
    for block in model.layers:
        _widen_ffn(block)
        blocks += [block, copy.deepcopy(block)]
    return set_layers(model, blocks)


@dataclass(frozen=True)
class VCycleConfig(MethodConfig):
    warm_fraction: float = bounded(0.05, 0.0, 0.5)  # full model before coalescing (the paper's E_a)
    coarse_fraction: float = bounded(0.3, 0.05, 0.8)  # the small model's share of the budget
    alpha: float = bounded(0.5, 0.0, 1.0)  # interpolation weight of the de-coalesced model
    version: int = 1


@register_method(
    "train.growth.multilevel_vcycle",
    VCycleConfig,
    category="growth",
    families=("training",),
    changes=("outputs", "schedule"),
    paper="A Multi-Level Framework for Accelerating Training Transformer Models",
    arxiv="2404.07999",
    catalogue_row=2,
    phase="training",
)
class VCycle(Method):
    def supports(self, bundle, device):
        if not {"transformer_blocks", "from_scratch"} <= bundle.capabilities:
            return "the V-cycle coalesces a transformer trained from scratch"
        return None

    def apply(self, bundle, config):
        blocks, ffn = depth(bundle.model), bundle.model.layers[0].feed_forward.w1.out_features
        if blocks % 2 or ffn % 2:
            raise ValueError(f"coalescing pairs needs an even depth and FFN width, not {blocks} and {ffn}")

        def stages(task, workload):
            saved: dict = {}
            warm = max(1, round(config.warm_fraction * workload.budget_steps))
            coarse = max(1, round(config.coarse_fraction * workload.budget_steps))

            def down(model, task):
                saved["before"] = copy.deepcopy(model.state_dict())
                return coalesce(model)

            def up(model, task):
                model = decoalesce(model)
                seen: set[int] = set()  # a tied head shares its embedding's tensor: interpolate it once
                with torch.no_grad():
                    for name, tensor in model.state_dict().items():
                        if tensor.data_ptr() not in seen:
                            seen.add(tensor.data_ptr())
                            tensor.mul_(config.alpha).add_(saved["before"][name], alpha=1 - config.alpha)
                return model

            return [
                Stage(warm, None, "full"),
                Stage(coarse, down, "coalesced"),
                Stage(workload.budget_steps - warm - coarse, up, "interpolated"),
            ]

        plan = Plan(
            "V-cycle",
            stages=stages,
            notes={
                "warm_fraction": config.warm_fraction,
                "alpha": config.alpha,
                "coarse_fraction": config.coarse_fraction,
            },
        )
        return trainer(bundle, config, plan)
