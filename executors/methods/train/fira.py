"""`train.memory.fira`: Fira (Chen et al., "Fira: Can We Achieve Full-rank Training of LLMs Under
Low-rank Constraint?", 2024) — GaLore's low-rank Adam states, plus the gradient outside the
projection added back, scaled per column by the adaptive factor of the projected gradient
(norm-based scaling) and its norm kept from growing more than 1.01× per step (the norm-growth
limiter); lowrank.py. The optimiser memory is GaLore's; the update is full-rank.
"""

from __future__ import annotations

from executors.families.training.engine import trainer
from executors.methods.train.galore import LowRankConfig, low_rank_plan, low_rank_support
from executors.registry import Method, register_method


class FiraConfig(LowRankConfig):
    """GaLore's knobs; the residual's scaling and limiter have none (γ = 1.01 as in the paper)."""


@register_method(
    "train.memory.fira",
    FiraConfig,
    category="memory",
    families=("training",),
    changes=("outputs", "train_memory"),
    paper="Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank Constraint?",
    arxiv="2410.01623",
    catalogue_row=89,
    phase="training",
)
class Fira(Method):
    def supports(self, bundle, device):
        return low_rank_support(bundle)

    def apply(self, bundle, config):
        return trainer(bundle, config, low_rank_plan("Fira", config, residual=True))
