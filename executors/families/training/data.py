"""The data the training workloads learn from, all present on every machine.

Two text domains as byte tokens — Python source (the standard library, the LM family's
corpus) and English prose (the interpreter's own help topics, `pydoc_data.topics`) — so an LM
can be pre-trained on one and continue on the other; and scikit-learn's digits, upsampled to
16 × 16 so that resolution curricula have room below full size. Splits are positional (every
tenth file or topic held out, a seeded permutation of the digits), never by listing order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache

import torch
import torch.nn.functional as F

from executors.families.lm.corpus import load_corpus

POOL_TOKENS = 262_144  # more than any workload's budget sees, so a one-pass regime never repeats
HELDOUT_TOKENS = 32_768
CHUNK = 512  # the unit a quality score rates
IMAGE_SIZE = 16
HELDOUT_EVERY = 10


@dataclass(frozen=True)
class TokenDomain:
    name: str
    train: torch.Tensor  # int64 byte tokens: the training pool
    heldout: torch.Tensor  # never trained on: validation windows
    quality: torch.Tensor  # one score per CHUNK tokens of `train` (higher: more "textbook-like")


@dataclass(frozen=True)
class ImageSet:
    name: str
    train_x: torch.Tensor  # [N, 1, 16, 16], standardised
    train_y: torch.Tensor
    heldout_x: torch.Tensor
    heldout_y: torch.Tensor
    classes: int = 10


def _bytes(texts, limit: int) -> torch.Tensor:
    data = "\n".join(texts).encode("utf-8", errors="replace")[:limit]
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def quality_score(text: str) -> float:
    """A heuristic quality rating in the spirit of Gopher's rules (Rae et al., 2021) and the
    "textbook-like" selection of 1.5-Pints: prose-like letters and words score high; numeric
    tables, escapes, long lines and repeated lines score low."""
    if not text.strip():
        return -1.0
    letters = sum(c.isalpha() or c == " " for c in text) / len(text)
    symbols = len(re.findall(r"[0-9]|\\x|0x|[{}\[\]]", text)) / len(text)
    lines = [line for line in text.splitlines() if line.strip()]
    repeated = 1 - len(set(lines)) / len(lines) if lines else 1.0
    long_lines = sum(len(line) > 120 for line in lines) / len(lines) if lines else 1.0
    words = re.findall(r"[A-Za-z]+", text)
    word_len = sum(map(len, words)) / len(words) if words else 0.0
    sane_words = 1.0 if 3 <= word_len <= 10 else 0.0
    return letters - 2 * symbols - repeated - long_lines + 0.2 * sane_words


def _scores(stream: torch.Tensor) -> torch.Tensor:
    pieces = [
        bytes(stream[i : i + CHUNK].tolist()).decode("utf-8", errors="replace")
        for i in range(0, len(stream) - CHUNK + 1, CHUNK)
    ]
    return torch.tensor([quality_score(p) for p in pieces])


@cache
def token_domain(name: str) -> TokenDomain:
    if name == "code":
        corpus = load_corpus()
        train, heldout = corpus.train, corpus.heldout
    elif name == "prose":
        from pydoc_data.topics import topics

        keys = sorted(topics)
        train = tuple(topics[k] for i, k in enumerate(keys) if i % HELDOUT_EVERY)
        heldout = tuple(topics[k] for i, k in enumerate(keys) if i % HELDOUT_EVERY == 0)
    else:
        raise ValueError(f"unknown text domain {name!r}; known: code, prose")
    stream = _bytes(train, POOL_TOKENS)
    return TokenDomain(name, stream, _bytes(heldout, HELDOUT_TOKENS), _scores(stream))


@lru_cache(maxsize=1)
def digits() -> ImageSet:
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(raw.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    cut = len(order) * 4 // 5
    train, heldout = order[:cut], order[cut:]
    return ImageSet("digits", images[train], labels[train], images[heldout], labels[heldout])


def lowpass(images: torch.Tensor, size: int) -> torch.Tensor:
    """EfficientTrain's low-frequency cropping: keep the central `size` × `size` of the centred 2-D
    spectrum and transform back, giving a smaller image that holds only the low frequencies."""
    full = images.shape[-1]
    if size >= full:
        return images
    spectrum = torch.fft.fftshift(torch.fft.fft2(images), dim=(-2, -1))
    start = (full - size) // 2
    cropped = spectrum[..., start : start + size, start : start + size]
    # Rescale so the mean intensity survives the change of size.
    return torch.fft.ifft2(torch.fft.ifftshift(cropped, dim=(-2, -1))).real * (size * size) / (full * full)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Multigrid's spatial shapes: a plain bilinear resampling to `size` × `size`."""
    if size == images.shape[-1]:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def shift(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    """The vision recipe's augmentation: a random translation of up to `magnitude` pixels per image."""
    most = int(round(magnitude))
    if most <= 0:
        return images
    dx, dy = (torch.randint(-most, most + 1, (2,), generator=generator)).tolist()
    return torch.roll(images, shifts=(dy, dx), dims=(-2, -1))
