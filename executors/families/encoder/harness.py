"""The encoder's hook on the measurement protocol: embed one batch per call.

A runner embeds `ids, mask` with its (possibly transformed) encoder. Quality is measured once
per prepared model on the local retrieval set, through the runner's own model: the mean cosine
of every embedding to the unmodified encoder's, and recall@k of the transformed encoder on its
own (with the change against the reference's recall).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from executors.families.encoder.model import encoder_of
from executors.families.encoder.workloads import (
    EmbedWorkload,
    RetrievalEmbeddings,
    embed_inputs,
    embedding_quality,
    retrieval_embeddings,
    retrieval_set,
)
from executors.protocol import KindHarness, Prepared, Quality
from executors.registry import ModelBundle, unwrap

_REFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # unmodified encoder → its embeddings


@dataclass
class Embedder:
    """The encoder family's plain runner: `embed(ids, mask)` → [B, dim] unit-length embeddings."""

    model: torch.nn.Module
    stats: dict = field(default_factory=dict)

    @torch.inference_mode()
    def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(ids, mask)


def activation_bytes(bundle: ModelBundle, workload: EmbedWorkload) -> int:
    """fp32 working set of one layer: FFN hidden + q/k/v/out, and the T×T attention scores."""
    config, tokens = encoder_of(bundle.model).config, workload.batch_size * workload.seq_len
    scores = workload.batch_size * config.n_heads * workload.seq_len**2
    return 4 * (tokens * (config.ffn_dim + 4 * config.dim) + scores)


def _reference(bundle: ModelBundle) -> RetrievalEmbeddings:
    model = unwrap(bundle.model)
    if model not in _REFERENCE:
        _REFERENCE[model] = retrieval_embeddings(model, bundle)
    return _REFERENCE[model]


def embedding_figures(prepared: Prepared, bundle: ModelBundle) -> dict:
    """Cosine to the unmodified encoder and recall, once per prepared model (the set takes seconds)."""
    if "embedding_cosine" not in prepared.quality:
        mine = retrieval_embeddings(prepared.applied_runner.model, bundle)
        prepared.quality.update(embedding_quality(mine, _reference(bundle)))
    return prepared.quality


class EmbedHarness(KindHarness):
    unit = "seq/s"

    def session(self, bundle, workload, device, baseline, warmup):
        return tuple(t.to(device) for t in embed_inputs(bundle, workload))

    def call(self, runner, session, workload, seed):
        return runner.embed(*session)

    def working_bytes(self, bundle, workload, outputs):
        return activation_bytes(bundle, workload)

    def quality(self, prepared, baseline, bundle, workload, session, outputs) -> Quality:
        mine, base = embedding_figures(prepared, bundle), embedding_figures(baseline, bundle)
        retrieval = retrieval_set()
        recall = {k: v for k, v in mine.items() if k.startswith("recall_at_")}
        figures = {
            "embedding_cosine_min": mine["embedding_cosine_min"],
            **recall,
            **{f"baseline_{k}": base[k] for k in recall},
            **{f"{k}_delta": v - base[k] for k, v in recall.items()},
            "quality_basis": "retrieval set embedded by the runner's own encoder",
            "retrieval_set": "pydoc-topics-headings",
            "retrieval_set_sha256": retrieval.sha256,
            "retrieval_queries": len(retrieval.queries),
        }
        cosine = mine["embedding_cosine"]
        return Quality("embedding_cosine", base["embedding_cosine"], cosine, cosine - base["embedding_cosine"],
                       metrics=figures)  # fmt: skip

    def metrics(self, prepared, baseline, bundle, workload, session, outputs) -> dict:
        return {
            "peak_mem_basis": "weights + one layer's fp32 activations (estimate)",
            **prepared.runner.stats,
        }


def observe(runner, bundle) -> dict:
    """What the registry suite compares with the reference: embeddings of two fixed text windows."""
    ids, mask = embed_inputs(bundle, EmbedWorkload(2, 32))
    return {"outputs": runner.embed(ids, mask)}
