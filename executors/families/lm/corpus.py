"""The text corpus that is always present: the Python standard library's own source.

Files are taken in sorted order and split by position (every tenth file is held out), so the
split never depends on the file system's listing order. The corpus hash goes into each zoo
manifest: another Python version has other sources and therefore trains another model.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

HELDOUT_EVERY = 10
CHUNK_CHARS = 6000  # long enough for a 1024-token prompt under either tokenizer


@dataclass(frozen=True)
class Corpus:
    train: tuple[str, ...]  # whole files
    heldout: tuple[str, ...]
    sha256: str
    n_files: int


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(root.glob("*.py"))


@lru_cache(maxsize=1)
def load_corpus() -> Corpus:
    digest = hashlib.sha256()
    train: list[str] = []
    heldout: list[str] = []
    files = stdlib_files()
    for index, path in enumerate(files):
        text = path.read_text(encoding="utf-8", errors="replace")
        digest.update(path.name.encode() + b"\0" + text.encode())
        (heldout if index % HELDOUT_EVERY == 0 else train).append(text)
    return Corpus(tuple(train), tuple(heldout), digest.hexdigest()[:16], len(files))


def chunks(texts: tuple[str, ...], size: int = CHUNK_CHARS) -> tuple[str, ...]:
    """Fixed-size pieces of every text (the last piece of a file may be shorter)."""
    return tuple(text[i : i + size] for text in texts for i in range(0, len(text), size))
