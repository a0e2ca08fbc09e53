"""Depth and width surgery on transformer stacks shared by the growth methods (G_stack, the
V-cycle): a model's `layers` list and its config's layer count change together."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from torch import nn


def layer_count_field(model: Any) -> str:
    return "n_layers" if hasattr(model.config, "n_layers") else "layers"


def set_layers(model: Any, layers: list[nn.Module]) -> Any:
    model.layers = nn.ModuleList(layers)
    model.config = dataclasses.replace(model.config, **{layer_count_field(model): len(layers)})
    return model


def shallow(model: Any, count: int) -> Any:
    """The model cut to its first `count` blocks (a growth method's small model)."""
    return set_layers(model, list(model.layers)[:count])


def stacked(model: Any, depth: int) -> Any:
    """G_stack's operator: the trained blocks repeated in order until `depth` blocks."""
    blocks = list(model.layers)
    return set_layers(model, [copy.deepcopy(blocks[i % len(blocks)]) for i in range(depth)])


def depth(model: Any) -> int:
    return getattr(model.config, layer_count_field(model))
