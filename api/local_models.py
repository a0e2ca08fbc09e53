"""Registering a local checkpoint: the one way a model that is not in the zoo enters the store.

Only an admin registers, only folders under the configured model root qualify (symlinks are
resolved first, so none leads out), and only safetensors weights count. The API reads nothing
but JSON here — ``config.json`` and the safetensors headers, which name tensor shapes — so
registering never loads a tensor or runs a line of the checkpoint's code; checkpoints that
ask for their own code (``auto_map``) are refused, as the loaders never trust remote code.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from sqlmodel import Session

from api.errors import Conflict, Unprocessable
from profiles.models import ModelSpec

MAX_HEADER_BYTES = 100 * 2**20  # a safetensors header is JSON; real ones are a few MB at most
CONFIG_FIELDS = {
    "layers": ("num_hidden_layers", "n_layers", "n_layer"),
    "width": ("hidden_size", "dim", "n_embd"),
    "heads": ("num_attention_heads", "n_heads", "n_head"),
    "kv_heads": ("num_key_value_heads", "n_kv_heads"),
    "vocab": ("vocab_size",),
    "context": ("max_position_embeddings", "max_seq_len", "n_positions"),
}


def resolve_under(root: Path, path: str) -> Path:
    if "\x00" in path:
        raise Unprocessable("a path has no NUL characters")
    candidate = Path(path)
    folder = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not folder.is_relative_to(root):
        raise Unprocessable(f"models may be registered only from under the model root {root}")
    if not folder.is_dir():
        raise Unprocessable(f"no folder {folder.relative_to(root)} under the model root")
    return folder


def _parameters(files: list[Path]) -> int:
    total = 0
    for file in files:
        with file.open("rb") as handle:
            head = handle.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            if not 0 < size <= MAX_HEADER_BYTES:
                raise Unprocessable(f"{file.name} is not a safetensors file")
            try:
                header = json.loads(handle.read(size))
            except (ValueError, UnicodeDecodeError):
                raise Unprocessable(f"{file.name} has no readable safetensors header") from None
        for name, tensor in header.items():
            if name != "__metadata__" and isinstance(tensor, dict):
                total += math.prod(int(d) for d in tensor.get("shape", []))
    return total


def _config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise Unprocessable("config.json is not valid JSON") from None
    if not isinstance(config, dict):
        raise Unprocessable("config.json must hold a JSON object")
    if "auto_map" in config:
        raise Unprocessable("this checkpoint asks for its own code (auto_map); remote code is never run")
    return config


def register_local_model(session: Session, root: Path, path: str, family: str) -> ModelSpec:
    folder = resolve_under(root, path)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise Unprocessable("the folder holds no .safetensors weights (other formats are never loaded)")
    model_id = f"local:{folder}"
    if session.get(ModelSpec, model_id) is not None:
        raise Conflict(f"{model_id} is registered already")
    config = _config(folder)
    numbers = {
        field: next((config[k] for k in keys if isinstance(config.get(k), int) and config[k] >= 0), None)
        for field, keys in CONFIG_FIELDS.items()
    }
    descriptors = {"architectures": config.get("architectures"), "model_type": config.get("model_type")}
    row = ModelSpec.model_validate(
        {
            "id": model_id,
            "family": family,
            "params": _parameters(weights),
            "source": model_id,
            "descriptors": {k: v for k, v in descriptors.items() if isinstance(v, (str, list))},
            **numbers,
        }
    )
    session.add(row)
    session.flush()
    return row
