"""Image data that is always present and deterministic: scikit-learn's digits and synthetic shapes.

- **digits**: the 1 797 8×8 handwritten digits that ship inside scikit-learn, upsampled
  (bilinear) to the requested resolution and repeated over three channels. A fixed seeded
  permutation puts 1 000 images in the held-out split; the other 797 are the training split,
  which training draws from with small seeded affine augmentations.
- **shapes**: scenes drawn from a seeded distribution and rendered at any resolution: one large
  shape whose kind is the label (circle, ring, square, triangle, plus, hexagram), a random
  colour, size, position and rotation, on a background with a colour gradient, behind it
  3–8 small clutter items (dots and strokes of other colours), and pixel noise. A scene is
  resolution-free (coordinates in the unit square, edges anti-aliased by their signed
  distance), so the same held-out scenes render at 32, 64 or 128 pixels. The held-out split is
  scenes 0–999 of a seed no training draw uses; training draws fresh scenes per step.

Other families reuse the renderer (`render_shapes`, `digits_images`): nothing here imports a model.
Pixels are uint8; `to_pixels` maps them to the [-1, 1] floats the models read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

SHAPE_CLASSES = ("circle", "ring", "square", "triangle", "plus", "hexagram")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
HELDOUT_IMAGES = 1000
HELDOUT_SEED = 2_000_003  # held-out shapes; training seeds are drawn below 2**31 from a generator, never this one
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class Scene:
    """One shapes image, independent of resolution: positions and sizes are fractions of the side."""

    label: int
    centre: tuple[float, float]
    size: float  # the shape's outer radius
    angle: float
    colour: tuple[float, float, float]
    background: tuple[float, float, float]
    gradient: tuple[float, float, float]  # direction x, direction y, strength
    clutter: tuple[tuple[float, ...], ...]  # (kind, x0, y0, x1, y1, width, r, g, b); kind 0 = dot, 1 = stroke
    noise_seed: int


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def sample_scene(rng: np.random.Generator) -> Scene:
    label = int(rng.integers(len(SHAPE_CLASSES)))
    size = float(rng.uniform(0.17, 0.32))
    centre = (float(rng.uniform(size + 0.02, 0.98 - size)), float(rng.uniform(size + 0.02, 0.98 - size)))
    hue = float(rng.uniform())
    colour = _hsv(hue, float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.65, 1.0)))
    background = _hsv(float(rng.uniform()), float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.08, 0.4)))
    direction = float(rng.uniform(0, 2 * math.pi))
    gradient = (math.cos(direction), math.sin(direction), float(rng.uniform(0.0, 0.25)))
    clutter = []
    for _ in range(int(rng.integers(3, 9))):
        kind = int(rng.integers(2))
        x0, y0 = rng.uniform(0.03, 0.97, size=2)
        length, turn = rng.uniform(0.05, 0.25), rng.uniform(0, 2 * math.pi)
        x1, y1 = (x0 + length * math.cos(turn), y0 + length * math.sin(turn)) if kind else (x0, y0)
        width = rng.uniform(0.012, 0.025) if kind else rng.uniform(0.015, 0.045)
        r, g, b = _hsv((hue + rng.uniform(0.2, 0.8)) % 1.0, float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.3, 0.9)))
        clutter.append((float(kind), float(x0), float(y0), float(x1), float(y1), float(width), r, g, b))
    return Scene(
        label,
        centre,
        size,
        float(rng.uniform(0, 2 * math.pi)),
        colour,
        background,
        gradient,
        tuple(clutter),
        int(rng.integers(2**31)),
    )


def _box(px: np.ndarray, py: np.ndarray, half_x: float, half_y: float) -> np.ndarray:
    qx, qy = np.abs(px) - half_x, np.abs(py) - half_y
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _regular_polygon(px: np.ndarray, py: np.ndarray, radius: float, sides: int, turn: float = 0.0) -> np.ndarray:
    """Signed distance to a convex regular polygon (exact inside, a close bound outside)."""
    apothem = radius * math.cos(math.pi / sides)
    distance = np.full(px.shape, -np.inf)
    for k in range(sides):
        normal = turn + math.pi / sides + 2 * math.pi * k / sides
        distance = np.maximum(distance, px * math.cos(normal) + py * math.sin(normal) - apothem)
    return distance


def _shape_distance(label: int, px: np.ndarray, py: np.ndarray, size: float) -> np.ndarray:
    name = SHAPE_CLASSES[label]
    if name == "circle":
        return np.hypot(px, py) - size
    if name == "ring":
        return np.abs(np.hypot(px, py) - 0.72 * size) - 0.28 * size
    if name == "square":
        return _box(px, py, 0.8 * size, 0.8 * size)
    if name == "triangle":
        return _regular_polygon(px, py, size, 3, math.pi / 2)
    if name == "plus":
        return np.minimum(_box(px, py, size, 0.3 * size), _box(px, py, 0.3 * size, size))
    return np.minimum(_regular_polygon(px, py, size, 3, math.pi / 2), _regular_polygon(px, py, size, 3, -math.pi / 2))


def _stroke_distance(x: np.ndarray, y: np.ndarray, item: tuple[float, ...]) -> np.ndarray:
    _, x0, y0, x1, y1, width = item[:6]
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy)) - width


def render(scene: Scene, resolution: int) -> np.ndarray:
    """The scene as a [resolution, resolution, 3] uint8 image; edges are anti-aliased over one pixel."""
    centres = (np.arange(resolution) + 0.5) / resolution
    y, x = np.meshgrid(centres, centres, indexing="ij")
    gx, gy, strength = scene.gradient
    shade = 1.0 + strength * ((x - 0.5) * gx + (y - 0.5) * gy) * 2
    image = np.asarray(scene.background)[None, None, :] * shade[..., None]

    def paint(distance: np.ndarray, colour) -> None:
        alpha = np.clip(0.5 - distance * resolution, 0.0, 1.0)[..., None]
        image[:] = image * (1 - alpha) + np.asarray(colour)[None, None, :] * alpha

    for item in scene.clutter:
        paint(_stroke_distance(x, y, item), item[6:9])
    cos, sin = math.cos(scene.angle), math.sin(scene.angle)
    px, py = x - scene.centre[0], y - scene.centre[1]
    paint(_shape_distance(scene.label, cos * px + sin * py, -sin * px + cos * py, scene.size), scene.colour)
    noise = np.random.default_rng(scene.noise_seed).normal(0.0, 0.03, image.shape)
    return np.clip((image + noise) * 255 + 0.5, 0, 255).astype(np.uint8)


def shape_scenes(count: int, seed: int) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng) for _ in range(count)]


def render_shapes(count: int, resolution: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` seeded scenes at `resolution`: uint8 images [N, 3, R, R] and int64 labels [N]."""
    scenes = shape_scenes(count, seed)
    images = np.stack([render(scene, resolution) for scene in scenes]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.tensor([s.label for s in scenes])


@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(8×8 images in [0, 1] as [N, 1, 8, 8], labels, seeded permutation)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    return images, torch.tensor(digits.target), order


def _upsample(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """[N, 1, h, w] in [0, 1] → uint8 [N, 3, R, R] (bilinear)."""
    big = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return (big.clamp(0, 1) * 255 + 0.5).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def digits_images(split: str, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits `split` ("heldout": 1 000 images, "train": 797) as uint8 [N, 3, R, R] and labels."""
    images, labels, order = _digits()
    chosen = order[:HELDOUT_IMAGES] if split == "heldout" else order[HELDOUT_IMAGES:]
    return _upsample(images[chosen], resolution), labels[chosen]


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → the float32 [-1, 1] pixels every model here reads."""
    return images.float().div_(127.5).sub_(1.0)


@dataclass(frozen=True)
class ImageSet:
    """One of the two datasets, by name: its classes, fixed held-out split and seeded training draws."""

    name: str

    def __post_init__(self):
        if self.name not in DATASETS:
            raise ValueError(f"unknown image set {self.name!r} (known: {', '.join(DATASETS)})")

    @property
    def classes(self) -> tuple[str, ...]:
        return DATASETS[self.name]

    def heldout(self, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed held-out split (uint8 images, labels): never trained or calibrated on."""
        return _heldout(self.name, resolution)

    def training_batch(
        self, count: int, resolution: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A seeded batch from the training distribution (float pixels, labels)."""
        if self.name == "shapes":
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
            images, labels = render_shapes(count, resolution, seed if seed != HELDOUT_SEED else seed + 1)
            return to_pixels(images), labels
        images, labels, order = _digits()
        pick = order[HELDOUT_IMAGES:][torch.randint(len(order) - HELDOUT_IMAGES, (count,), generator=generator)]
        return to_pixels(_upsample(_augment(images[pick], generator), resolution)), labels[pick]


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small seeded affine jitter of 8×8 digits: ±10° rotation, ±10 % scale, ±0.75 px shift."""
    n = len(images)
    angle = (torch.rand(n, generator=generator) - 0.5) * math.radians(20)
    scale = 1 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * (1.5 / 4)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = angle.cos() / scale, -angle.sin() / scale
    theta[:, 1, 0], theta[:, 1, 1] = angle.sin() / scale, angle.cos() / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


DATASETS = {"shapes": SHAPE_CLASSES, "digits": DIGIT_CLASSES}


@lru_cache(maxsize=8)
def _heldout(name: str, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "shapes":
        return render_shapes(HELDOUT_IMAGES, resolution, HELDOUT_SEED)
    return digits_images("heldout", resolution)
