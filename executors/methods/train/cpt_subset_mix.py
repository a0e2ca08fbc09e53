"""`train.data.cpt_subset_mix`: the stability-gap recipe for continual pre-training (Guo et al.,
"Efficient Continual Pre-training by Mitigating the Stability Gap", 2024).

At the start of a continuation the new-domain metric first gets worse before it improves (the
stability gap). The paper's three remedies, together: train several epochs on a right-sized
subset of the new domain instead of one pass over all of it; make that subset the highest-
quality part; and mix in data like the pre-training data. Here: the best-rated
`subset_fraction` of the reference's training set (as rated by data.quality_score), with
`mix` of every batch drawn from the upstream domain's pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families.training.engine import Plan, trainer
from executors.families.training.tasks import TokenData, Windows
from executors.methods.train.data_policies import top_chunks
from executors.registry import Method, MethodConfig, bounded, register_method


@dataclass(frozen=True)
class SubsetMixConfig(MethodConfig):
    subset_fraction: float = bounded(0.5, 0.05, 1.0)
    mix: float = bounded(0.25, 0.0, 0.9)
    version: int = 1


@register_method(
    "train.data.cpt_subset_mix",
    SubsetMixConfig,
    category="data",
    families=("training",),
    changes=("outputs",),
    paper="Efficient Continual Pre-training by Mitigating the Stability Gap",
    arxiv="2406.14833",
    catalogue_row=60,
    phase="training",
)
class SubsetMix(Method):
    def supports(self, bundle, device):
        if not {"pretrained_start", "text_pool"} <= bundle.capabilities:
            return "the subset-and-mixture recipe continues a pre-trained LM on a new text domain"
        return None

    def apply(self, bundle, config):
        def subset_and_mixture(task, workload):
            subset = top_chunks(task.domain, int(config.subset_fraction * workload.data_tokens))
            parts = [(Windows(task.domain.train, subset), 1 - config.mix)]
            if config.mix > 0:
                parts.append((Windows(task.upstream.train), config.mix))
            return TokenData(tuple(parts))

        plan = Plan(
            "subset + mixture",
            data=subset_and_mixture,
            notes={"subset_fraction": config.subset_fraction, "mix": config.mix},
        )
        return trainer(bundle, config, plan)
