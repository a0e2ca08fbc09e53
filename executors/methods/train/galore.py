"""`train.memory.galore`: GaLore (Zhao et al., "GaLore: Memory-Efficient LLM Training by Gradient
Low-Rank Projection", ICML 2024) — Adam's moments of every block matrix kept in a rank-r
projection of its gradient, the projector refreshed from the gradient's SVD every T steps
(lowrank.py). The peer baseline of Fira.

The paper's defaults are rank 128-512 at width 512-4096 (about a quarter), T = 200 and α = 0.25
with a learning rate ten times its Adam baseline's. Here the rank is a quarter of the recipes'
width (8 of 32), T = 20 for budgets of 60-120 steps, and α = 1 on the reference's rate (which
the tuning budget then scales like every method's).
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families.training.engine import Plan, trainer
from executors.methods.train.lowrank import LowRankAdam, projected_groups
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class LowRankConfig(MethodConfig):
    rank: int = bounded(8, 1, 4096)
    update_gap: int = bounded(20, 1, 10_000)
    scale: float = bounded(1.0, 0.01, 10.0)
    version: int = 1


def low_rank_support(bundle) -> str | None:
    if "transformer_blocks" not in bundle.capabilities:
        return "low-rank gradient projection applies to the linear layers of transformer blocks; this model has none"
    return None


def low_rank_plan(name: str, config: LowRankConfig, residual: bool) -> Plan:
    def make(groups, schedule):
        return LowRankAdam(groups, schedule.lr, schedule.betas, weight_decay=schedule.weight_decay)

    return Plan(
        name,
        optimizer=make,
        groups=lambda model: projected_groups(model, config.rank, config.update_gap, config.scale, residual),
        notes={"rank": config.rank, "update_gap": config.update_gap, "scale": config.scale},
    )


@register_method(
    "train.memory.galore",
    LowRankConfig,
    category="memory",
    families=("training",),
    changes=("outputs", "train_memory"),
    paper="GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection",
    arxiv="2403.03507",
    catalogue_row=89,
    phase="training",
)
class GaLore(Method):
    def supports(self, bundle, device):
        return low_rank_support(bundle)

    def apply(self, bundle, config):
        return trainer(bundle, config, low_rank_plan("GaLore", config, residual=False))
