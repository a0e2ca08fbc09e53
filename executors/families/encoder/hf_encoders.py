"""A BERT-family `config.json` read for registration: its descriptors and a check of the weights'
names and shapes against the encoder it describes, on empty (meta) tensors — no weight is loaded."""

from __future__ import annotations

import torch

from executors.families import check_fit
from executors.families.encoder.model import SentenceEncoder, bert_config, bert_tensor_name


def describe(hf: dict) -> dict:
    config = bert_config(hf)
    with torch.device("meta"):  # exact parameter count, no memory, no weights
        params = sum(p.numel() for p in SentenceEncoder(config).parameters())
    return {
        "family": "encoder",
        "params": params,
        "layers": config.n_layers,
        "width": config.dim,
        "heads": config.n_heads,
        "kv_heads": config.n_heads,
        "vocab": config.vocab_size,
        "context": config.max_seq_len,
        "descriptors": {"ffn_dim": config.ffn_dim, "pooling": "mean+l2"},
    }


def check_weights(hf: dict, shapes: dict[str, list[int]]) -> None:
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in SentenceEncoder(bert_config(hf)).state_dict().items()}
    found: dict[str, tuple[int, ...]] = {}
    for name, shape in shapes.items():
        try:
            ours = bert_tensor_name(name)
        except KeyError:
            raise ValueError(f"unexpected tensor {name!r} in a BERT-family checkpoint") from None
        if ours is not None:
            found[ours] = tuple(shape)
    check_fit(expected, found)
