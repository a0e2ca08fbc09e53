"""One content digest and one cached-transform helper for every method that trains or calibrates.

A trained or calibrated artefact (pruned weights, a QAT student, learned clipping ranges, draft
heads, prompt tokens) is stored as safetensors with JSON metadata under
`<cache_dir>/<kind>/<key>.safetensors`, the key a hash of the source model's weights and the
config that made it. Profiling the same model again loads it instead of training, and the
record's setup time is the time the build originally took (kept in the metadata).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)


def _update(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        if value.is_quantized:  # packed int8 weights: their integer codes and grid
            _update(digest, value.int_repr())
            digest.update(
                repr(
                    value.q_per_channel_scales().tolist()
                    if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
                    else value.q_scale()
                ).encode()
            )
            return
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, (tuple, list)):
        for item in value:
            _update(digest, item)


def weights_digest(model: nn.Module) -> str:
    """Content hash of a model's class, tensor names, shapes and bytes (packed int8 weights included)."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        _update(digest, value)
    return digest.hexdigest()


def cache_file(kind: str, model: nn.Module, config: Mapping[str, Any]) -> Path:
    from profiles.settings import get_settings

    key = hashlib.sha256(json.dumps({"model": weights_digest(model), "config": config}, sort_keys=True).encode())
    return get_settings().cache_dir / kind / f"{key.hexdigest()[:24]}.safetensors"


@dataclass(frozen=True)
class Cached:
    tensors: dict[str, torch.Tensor]
    meta: dict
    hit: bool  # loaded from the cache rather than built now
    build_s: float  # what building took (now, or when the cached artefact was made)


def cached_tensors(
    kind: str, model: nn.Module, config: Mapping[str, Any], build: Callable[[], tuple[dict[str, torch.Tensor], dict]]
) -> Cached:
    """`build() -> (tensors, meta)` once per (model weights, config); later calls read the file."""
    path = cache_file(kind, model, config)
    if path.exists():
        with safe_open(str(path), framework="pt") as handle:
            meta = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
        log.info("%s: loaded cached %s", kind, path.name)
        return Cached(load_file(str(path)), meta, True, float(meta.get("build_s", 0.0)))
    began = time.perf_counter()
    tensors, meta = build()
    meta = {**meta, "build_s": round(time.perf_counter() - began, 3)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
        str(path),
        metadata={k: json.dumps(v) for k, v in meta.items()},
    )
    log.info("%s: built in %.1f s, cached as %s", kind, meta["build_s"], path.name)
    return Cached(tensors, meta, False, meta["build_s"])


def state_without_tied_head(model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict safetensors can store: a head tied to the embedding is left out (shared storage)."""
    tied = getattr(getattr(model, "config", None), "tie_embeddings", False)
    return {k: v for k, v in model.state_dict().items() if not (tied and k == "output.weight")}
