"""The diffusion family's images: scikit-learn's digits at 32×32 and seeded synthetic shapes at 64×64.

Both are built here, deterministically, with no download. Digits (1 797 8×8 scans) are upsampled
bilinearly to the model's resolution and split by a seeded permutation: the diffusion models
and the FID-proxy classifier train on one part, the FID proxy compares generated images with the
other. Shapes are rendered from seeded parameters (class, centre, size, rotation, brightness)
with 2× supersampling, so edges are anti-aliased; train and held-out images come from disjoint
seeds. Pixels lie in [-1, 1] (background −1), one channel.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

DIGITS_HELDOUT = 600
SHAPES = ("circle", "square", "triangle", "ring", "cross")
SHAPES_TRAIN, SHAPES_HELDOUT = 4000, 1200


@dataclass(frozen=True)
class ImageSet:
    """Train and held-out images ([N, 1, R, R] in [-1, 1]) with their class labels."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    heldout_images: torch.Tensor
    heldout_labels: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def classes(self) -> int:
        return len(self.class_names)

    @property
    def resolution(self) -> int:
        return self.train_images.shape[-1]

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256(self.name.encode())
        for tensor in (self.train_images, self.train_labels, self.heldout_images, self.heldout_labels):
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


@lru_cache(maxsize=4)
def digits(resolution: int = 32) -> ImageSet:
    from sklearn.datasets import load_digits

    scans = load_digits()
    pixels = torch.tensor(scans.images, dtype=torch.float32)[:, None] / 16.0 * 2 - 1
    images = F.interpolate(pixels, size=(resolution, resolution), mode="bilinear", align_corners=False).clamp(-1, 1)
    labels = torch.tensor(scans.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    held, train = order[:DIGITS_HELDOUT], order[DIGITS_HELDOUT:]
    return ImageSet(
        f"digits{resolution}", images[train], labels[train], images[held], labels[held], tuple(map(str, range(10)))
    )


def _render(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One shape of class `kind` on a size×size canvas in [-1, 1], 2× supersampled."""
    fine = 2 * size
    radius = rng.uniform(0.16, 0.3) * fine
    cx, cy = rng.uniform(radius + 2, fine - radius - 2, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    brightness = rng.uniform(0.2, 1.0)
    ys, xs = np.mgrid[0:fine, 0:fine] + 0.5
    dx, dy = xs - cx, ys - cy
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    r = np.hypot(u, v)
    name = SHAPES[kind]
    if name == "circle":
        inside = r <= radius
    elif name == "square":
        inside = (np.abs(u) <= radius * 0.8) & (np.abs(v) <= radius * 0.8)
    elif name == "triangle":  # equilateral, circumradius `radius`: three half-planes
        inside = np.ones_like(r, dtype=bool)
        for k in range(3):
            theta = angle + k * 2 * math.pi / 3
            inside &= dx * math.cos(theta) + dy * math.sin(theta) <= radius / 2
    elif name == "ring":
        inside = (r <= radius) & (r >= radius * 0.55)
    else:  # cross
        arm = radius / 3
        inside = ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | ((np.abs(v) <= arm) & (np.abs(u) <= radius))
    canvas = np.where(inside, brightness, -1.0)
    return canvas.reshape(size, 2, size, 2).mean(axis=(1, 3)).astype(np.float32)


def render_shapes(count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` shapes with balanced classes (i % classes), each drawn from its own seeded generator."""
    labels = torch.arange(count) % len(SHAPES)
    images = np.stack([_render(int(k), size, np.random.default_rng([seed, i])) for i, k in enumerate(labels)])
    return torch.from_numpy(images)[:, None], labels


@lru_cache(maxsize=2)
def shapes(resolution: int = 64) -> ImageSet:
    train_images, train_labels = render_shapes(SHAPES_TRAIN, resolution, seed=1)
    heldout_images, heldout_labels = render_shapes(SHAPES_HELDOUT, resolution, seed=2)
    return ImageSet(f"shapes{resolution}", train_images, train_labels, heldout_images, heldout_labels, SHAPES)


DATASETS = {"digits": digits, "shapes": shapes}


def image_set(name: str, resolution: int) -> ImageSet:
    if name not in DATASETS:
        raise ValueError(f"unknown image set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name](resolution)
