"""Registering a model that is not in the zoo: a folder under the model root, an uploaded folder, or
a `config.json` alone (descriptors only: advice without weights).

The family whose ConfigReader claims the config's model type describes it (executors.families);
nothing else here knows one architecture from another. Only JSON is read — `config.json` and
the safetensors headers, which name every tensor's dtype, shape and byte range — so registering
never loads a tensor or runs a line of the checkpoint's code. Refused, with a 4xx naming the
problem and nothing written: a path outside the root (symlinks are resolved first, the folder's
and each file's), a checkpoint that brings its own code (`auto_map`, `*.py`), weights that are
pickles only, a truncated or malformed safetensors file, tensors that do not fit the config, an
architecture no family loads (the answer lists those that are), a folder without what its family
needs to run (its tokenizer, vision.json). A content hash of the weights identifies them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlmodel import Session

from api.errors import Conflict, TooLarge, Unprocessable
from profiles.models import ModelSpec, canonical_json

MAX_HEADER_BYTES = 100 * 2**20  # a safetensors header is JSON; real ones are a few MB at most
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")  # never loaded
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}  # fmt: skip
# What an uploaded folder may hold: weights as safetensors and the JSON/text files that go with them.
UPLOAD_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "vision.json",
    "model.safetensors.index.json",
)
MAX_UPLOAD_FILES = 64


@dataclass(frozen=True)
class Checkpoint:
    """A checked folder: its config, the family that loads it, the store's fields, the weights' hash."""

    folder: Path
    config: dict
    loader: str  # the executors family that loads it
    fields: dict  # ModelSpec fields from the family's ConfigReader
    weights_sha256: str


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


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """The tensors a safetensors file holds, from its header, after checking that the file holds all
    of their bytes (a truncated download is refused here, not when a worker loads it)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if not 0 < length <= min(MAX_HEADER_BYTES, size - 8):
            raise Unprocessable(f"{path.name} is not a safetensors file (or is truncated inside its header)")
        try:
            header = json.loads(handle.read(length))
        except (ValueError, UnicodeDecodeError):
            raise Unprocessable(f"{path.name} has no readable safetensors header") from None
    if not isinstance(header, dict):
        raise Unprocessable(f"{path.name} has no readable safetensors header")
    shapes, end = {}, 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        try:
            shape, (begin, stop) = [int(d) for d in tensor["shape"]], tensor["data_offsets"]
            width = DTYPE_BYTES[tensor["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise Unprocessable(f"{path.name}: tensor {name[:100]!r} has no valid dtype, shape and offsets") from None
        if not 0 <= begin <= stop or stop - begin != math.prod(shape) * width:
            raise Unprocessable(f"{path.name}: tensor {name[:100]!r} has offsets that do not match its shape")
        shapes[name], end = shape, max(end, stop)
    held = size - 8 - length
    if held < end:
        raise Unprocessable(
            f"{path.name} is truncated: its header names {end:,} bytes of tensors, the file holds {held:,}"
        )
    if held > end:
        raise Unprocessable(f"{path.name} holds {held - end:,} bytes after its last tensor: not a safetensors file")
    return shapes


def read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise Unprocessable("config.json is not valid JSON") from None
    if not isinstance(config, dict):
        raise Unprocessable("config.json must hold a JSON object")
    if "auto_map" in config or config.get("trust_remote_code"):
        raise Unprocessable("this checkpoint asks for its own code (auto_map); remote code is never run")
    return config


def describe_config(config: dict) -> tuple[str, dict]:
    """(loading family, ModelSpec fields) of a config, or a 422 that lists the architectures loaded."""
    from executors.families import config_reader_for

    try:
        family, reader = config_reader_for(config)
        return family.name, reader.describe(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise Unprocessable(f"config.json: {str(exc)[:600]}") from None


def _files(folder: Path, root: Path) -> list[Path]:
    """The folder's files, none of them a way out of the root; a checkpoint's own code is refused."""
    files = []
    for entry in sorted(folder.iterdir()):
        if not entry.resolve().is_relative_to(root):
            raise Unprocessable(f"{entry.name} is a link that leads out of the model root")
        if entry.suffix == ".py":
            raise Unprocessable(f"{entry.name}: this checkpoint brings its own code; remote code is never run")
        if entry.is_file():
            files.append(entry)
    return files


def weights_digest(files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(2**20):
                digest.update(chunk)
    return digest.hexdigest()


def inspect_folder(folder: Path, root: Path) -> Checkpoint:
    from executors.families import get_family

    files = _files(folder, root)
    names = {f.name for f in files}
    if "config.json" not in names:
        raise Unprocessable("the folder has no config.json: its architecture cannot be known")
    config = read_config(folder / "config.json")
    weights = [f for f in files if f.suffix == ".safetensors"]
    if not weights:
        pickles = [f.name for f in files if f.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise Unprocessable(
                f"the weights are pickles ({', '.join(pickles[:3])}), which are never loaded: "
                "save them as safetensors (save_pretrained(..., safe_serialization=True))"
            )
        raise Unprocessable("the folder holds no .safetensors weights")
    loader, fields = describe_config(config)
    reader = get_family(loader).config_reader
    assert reader is not None  # describe_config found the family by its reader
    for need in reader.needs:
        if need not in names:
            raise Unprocessable(f"a {fields['family']} checkpoint needs {need} beside its weights; the folder has none")
    shapes: dict[str, list[int]] = {}
    for path in weights:
        shapes.update(safetensors_shapes(path))
    if reader.check_weights is not None:
        try:
            reader.check_weights(config, shapes)
        except (ValueError, KeyError) as exc:
            raise Unprocessable(str(exc)[:600]) from None
    return Checkpoint(folder, config, loader, fields, weights_digest(weights))


def _row(model_id: str, fields: dict, descriptors: dict) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            **{k: fields.get(k) for k in ("family", "layers", "width", "heads", "kv_heads", "vocab", "context")},
            "id": model_id,
            "params": fields["params"],
            "source": model_id,
            "descriptors": {**fields.get("descriptors", {}), **descriptors},
        }
    )


def _added(session: Session, row: ModelSpec) -> ModelSpec:
    if session.get(ModelSpec, row.id) is not None:
        raise Conflict(f"{row.id} is registered already")
    session.add(row)
    session.flush()
    return row


def _identity(checkpoint: Checkpoint, origin: str) -> dict:
    config = checkpoint.config
    return {
        "origin": origin,
        "loader": checkpoint.loader,
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures"),
        "weights_sha256": checkpoint.weights_sha256,
    }


def register_folder(session: Session, root: Path, path: str) -> ModelSpec:
    folder = resolve_under(root, path)
    checkpoint = inspect_folder(folder, root)
    return _added(session, _row(f"local:{folder}", checkpoint.fields, _identity(checkpoint, "folder")))


def register_config(session: Session, config: dict, name: str | None) -> ModelSpec:
    """Descriptors only: the advisor answers for it, nothing can run it (it has no weights)."""
    if "auto_map" in config or config.get("trust_remote_code"):
        raise Unprocessable("this checkpoint asks for its own code (auto_map); remote code is never run")
    loader, fields = describe_config(config)
    name = name or f"{config.get('model_type')}-{hashlib.sha256(canonical_json(config).encode()).hexdigest()[:8]}"
    extra = {"origin": "config", "loader": loader, "model_type": config.get("model_type"), "name": name}
    return _added(session, _row(f"config:{name}", fields, {**extra, "architectures": config.get("architectures")}))


def upload_name(filename: str | None) -> str:
    """An uploaded file's name: a bare name of a file a checkpoint holds, never a path."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    if name.endswith(PICKLE_SUFFIXES):
        raise Unprocessable(f"{name[:100]} is a pickle, which is never loaded: upload safetensors weights")
    if name.endswith(".py"):
        raise Unprocessable(f"{name[:100]}: a checkpoint's own code is never run")
    if not (name in UPLOAD_FILES or (name.endswith(".safetensors") and name[:1].isalnum() and len(name) <= 120)):
        raise Unprocessable(
            f"{name[:100]!r} is not a file of a checkpoint (allowed: *.safetensors, {', '.join(UPLOAD_FILES)})"
        )
    return name


def register_upload(
    session: Session, upload_dir: Path, files: list[tuple[str | None, BinaryIO]], cap: int
) -> ModelSpec:
    """An uploaded folder: written to a staging folder within the cap, checked as a folder is, then
    moved to `<upload_dir>/<weights hash>`; on any refusal the staging folder is removed."""
    if not files or len(files) > MAX_UPLOAD_FILES:
        raise Unprocessable(f"upload 1 to {MAX_UPLOAD_FILES} files: config.json, the safetensors weights, …")
    upload_dir.mkdir(parents=True, exist_ok=True)
    staging = upload_dir / f".staging-{os.urandom(8).hex()}"
    staging.mkdir()
    try:
        written = 0
        for filename, stream in files:
            name = upload_name(filename)
            target = staging / name
            if target.exists():
                raise Unprocessable(f"{name} was uploaded twice")
            with target.open("wb") as out:
                while chunk := stream.read(2**20):
                    written += len(chunk)
                    if written > cap:
                        raise TooLarge(f"the upload is larger than the cap of {cap:,} bytes (ACCEL_MAX_UPLOAD_BYTES)")
                    out.write(chunk)
        checkpoint = inspect_folder(staging, upload_dir)
        folder = upload_dir / checkpoint.weights_sha256[:16]
        if folder.exists():
            raise Conflict(f"local:{folder} holds these weights already")
        row = _row(f"local:{folder}", checkpoint.fields, _identity(checkpoint, "upload"))
        if session.get(ModelSpec, row.id) is not None:
            raise Conflict(f"{row.id} is registered already")
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        return _added(session, row)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
