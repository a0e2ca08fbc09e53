"""`train.reg.multisample_dropout`: multi-sample dropout (Inoue, 2019, arXiv 1905.09788).

The layers after the dropout — here the classifier head — run M times on the same features,
each with its own dropout mask (the weights are shared), and the loss is the mean of the M
losses: each step sees M dropout samples for the cost of M head evaluations, not M networks,
which the paper reports speeds up convergence. At evaluation dropout is off, so inference is
unchanged. It needs a model that ends in features → dropout → head (`dropout_head`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from executors.families.training.engine import Plan, trainer
from executors.registry import Method, MethodConfig, bounded, register_method


def multi_sample_loss(samples: int):
    def loss(task, model, batch) -> torch.Tensor:
        inputs, labels = batch
        features = model.features(inputs)
        return torch.stack(
            [F.cross_entropy(model.head(model.dropout(features)), labels) for _ in range(samples)]
        ).mean()

    return loss


@dataclass(frozen=True)
class MultiSampleDropoutConfig(MethodConfig):
    samples: int = bounded(8, 2, 64)
    version: int = 1


@register_method(
    "train.reg.multisample_dropout",
    MultiSampleDropoutConfig,
    category="regularization",
    families=("training",),
    changes=("outputs",),
    paper="Multi-Sample Dropout for Accelerated Training and Better Generalization",
    arxiv="1905.09788",
    catalogue_row=38,
    phase="training",
)
class MultiSampleDropout(Method):
    def supports(self, bundle, device):
        if "dropout_head" not in bundle.capabilities:
            return "the model has no dropout before its head to sample several times"
        return None

    def apply(self, bundle, config):
        return trainer(
            bundle,
            config,
            Plan("multi-sample dropout", loss=multi_sample_loss(config.samples), notes={"samples": config.samples}),
        )
