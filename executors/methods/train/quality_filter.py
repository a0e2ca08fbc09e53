"""`train.data.quality_filter`: a quality-filtered pre-training set (1.5-Pints, Tan et al., 2024).

1.5-Pints pre-trains on a small, curated, "textbook-like" corpus and matches larger models
trained on far more tokens. Here the same number of distinct tokens as the reference's training
set is chosen from the whole text pool by a quality rating (data.quality_score: prose-like
letters and words up, numeric tables, escapes, long and repeated lines down, in the spirit of
Gopher's rules), instead of taking the pool's first files; everything else is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.families.training.engine import Plan, trainer
from executors.methods.train.data_policies import top_chunks, windows
from executors.registry import Method, MethodConfig, register_method


@dataclass(frozen=True)
class QualityFilterConfig(MethodConfig):
    version: int = 1


@register_method(
    "train.data.quality_filter",
    QualityFilterConfig,
    category="data",
    families=("training",),
    changes=("outputs",),
    paper="1.5-Pints Technical Report: Pretraining in Days, Not Months",
    arxiv="2408.03506",
    catalogue_row=85,
    phase="training",
)
class QualityFilter(Method):
    def supports(self, bundle, device):
        if "text_pool" not in bundle.capabilities:
            return "quality filtering rates pieces of a text pool; this recipe trains on images"
        return None

    def apply(self, bundle, config):
        def chosen(task, workload):
            return windows(task.domain, top_chunks(task.domain, workload.data_tokens))

        return trainer(bundle, config, Plan("quality filter", data=chosen, notes={"rating": "data.quality_score"}))
