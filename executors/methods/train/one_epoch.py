"""`train.data.one_epoch`: the one-epoch regime (Komatsuzaki, "One Epoch Is All You Need", 2019).

Rather than several epochs over a fixed training set (the reference samples windows from its
`data_tokens` with replacement, so a budget sees them several times), train a single pass over
as much fresh data as the budget consumes — every window new — and drop the regularisation that
only multi-epoch training needs (weight decay here; the models have no dropout in the text
recipes). The paper's other heuristics size the model to the data; the model is the recipe's.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families.training.engine import Plan, trainer
from executors.families.training.tasks import TokenData, Windows
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class OneEpochConfig(MethodConfig):
    weight_decay: float = bounded(0.0, 0.0, 1.0)
    version: int = 1


@register_method(
    "train.data.one_epoch",
    OneEpochConfig,
    category="data",
    families=("training",),
    changes=("outputs",),
    paper="One Epoch Is All You Need",
    arxiv="1906.06669",
    catalogue_row=41,
    phase="training",
)
class OneEpoch(Method):
    def supports(self, bundle, device):
        if "text_pool" not in bundle.capabilities:
            return "one pass over fresh data needs a pool larger than the training set; this recipe has no such pool"
        return None

    def apply(self, bundle, config):
        def one_pass(task, workload):
            return TokenData(((Windows(task.domain.train, one_pass=True), 1.0),))

        plan = Plan(
            "one epoch",
            data=one_pass,
            weight_decay=config.weight_decay,
            notes={"pool_tokens": len(bundle.data.domain.train)} if bundle.data.modality == "tokens" else {},
        )
        return trainer(bundle, config, plan)
