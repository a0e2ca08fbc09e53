"""`train.stability.qknorm_zloss`: the small-scale stability pack of Wortsman et al., "Small-scale
proxies for large-scale Transformer training instabilities" (ICLR 2024).

Two mitigations the paper shows keep small transformers stable at high learning rates, which is
how they pay in time to target: qk-layernorm — a LayerNorm on each head's queries and keys
before the dot product, so attention logits cannot grow without bound — and the z-loss,
1e-4 · log²Z of the output softmax's normaliser, which keeps the output logits from drifting.
Both apply to a model trained from scratch (on a pre-trained one the new norms would change what
it computes); the z-loss term applies to every softmax output, LM and classifier alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from executors.families.training.engine import Plan, trainer
from executors.registry import Method, MethodConfig, bounded, register_method


class HeadNorm(nn.Module):
    """A LayerNorm over each head's slice of a projection's output (the projection's shape is kept)."""

    def __init__(self, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.norm = heads, nn.LayerNorm(head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.view(*x.shape[:-1], self.heads, -1)).view(x.shape)


def with_qk_norm(model: Any, task) -> nn.Module:
    """Queries and keys normalised per head right after their projections, before the rotation."""
    for block in model.layers:
        attention = block.attention
        attention.wq = nn.Sequential(attention.wq, HeadNorm(attention.n_heads, attention.head_dim))
        attention.wk = nn.Sequential(attention.wk, HeadNorm(attention.n_kv_heads, attention.head_dim))
    return model


def z_loss(coefficient: float):
    def loss(task, model, batch) -> torch.Tensor:
        logits, targets = task.logits(model, batch)
        logits = logits.reshape(-1, logits.shape[-1]).float()
        return F.cross_entropy(logits, targets.reshape(-1)) + coefficient * torch.logsumexp(logits, -1).pow(2).mean()

    return loss


@dataclass(frozen=True)
class QKNormZLossConfig(MethodConfig):
    qk_norm: bool = True
    z_loss: float = bounded(1e-4, 0.0, 1.0)
    version: int = 1


@register_method(
    "train.stability.qknorm_zloss",
    QKNormZLossConfig,
    category="stability",
    families=("training",),
    changes=("outputs", "weights"),
    paper="Small-scale proxies for large-scale Transformer training instabilities",
    arxiv="2309.14322",
    catalogue_row=42,
    phase="training",
)
class QKNormZLoss(Method):
    def supports(self, bundle, device):
        if "attention" not in bundle.capabilities:
            return "the model has no attention whose queries and keys could be normalised"
        if "from_scratch" not in bundle.capabilities:
            return "qk-layernorm changes what a pre-trained model computes: it applies to training from scratch"
        return None

    def apply(self, bundle, config):
        plan = Plan(
            "qk-layernorm + z-loss",
            model=with_qk_norm if config.qk_norm else None,
            loss=z_loss(config.z_loss),
            notes={"qk_norm": config.qk_norm, "z_loss": config.z_loss},
        )
        return trainer(bundle, config, plan)
