"""Image quality without a model hub: an FID proxy, generated-class accuracy and same-seed PSNR.

A small CNN classifier is trained here on the model's own training split (seeded, one thread,
cached as safetensors). Its 32-d penultimate features stand in for Inception's:
- **FID proxy**: the Fréchet distance between the features of `QUALITY_IMAGES` generated images
  (balanced classes, fixed seeds) and of the held-out real images. Its sampling error is the
  standard deviation over bootstrap resamples of the generated set; the floor is the distance
  between two halves of the held-out set (what two real samples of this size differ by).
- **class accuracy**: the classifier's accuracy on generated images against the class asked for.
- **PSNR / MSE to the reference**: every method generates from the same noise and labels as the
  reference (same seeds), so the pixel distance says how far it strays from the plain sampler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from executors.caching import cached_tensors
from executors.families.diffusion.data import ImageSet, image_set
from executors.training import Schedule, train

QUALITY_IMAGES = 250  # per grid record; bench/diffusion.py measures 1 000 (see docs/diffusion.md)
FEATURES = 32
BOOTSTRAP = 20
CLASSIFIER_STEPS = 400


class FeatureNet(nn.Module):
    """Stride-2 convolutions down to 4×4, global average pooling, a linear head."""

    def __init__(self, resolution: int, classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        widths = [16, 32, 64, 64, 64]
        for width in widths[: max(1, int(math.log2(resolution // 4)))]:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(4, width), nn.SiLU()]
            channels = width
        layers += [nn.Conv2d(channels, FEATURES, 3, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(FEATURES, classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels and light noise: generated images are never pixel-perfect."""
    shift = torch.randint(-2, 3, (2,), generator=generator).tolist()
    moved = torch.roll(images, shifts=shift, dims=(2, 3))
    return moved + 0.05 * torch.randn(images.shape, generator=generator)


@lru_cache(maxsize=8)
def classifier(dataset: str, resolution: int) -> FeatureNet:
    data = image_set(dataset, resolution)
    torch.manual_seed(0)
    net = FeatureNet(resolution, data.classes)
    config = {"dataset": data.name, "dataset_sha256": data.sha256, "steps": CLASSIFIER_STEPS, "version": 1}

    def build():
        def step_loss(step: int, generator: torch.Generator) -> torch.Tensor:
            pick = torch.randint(0, len(data.train_labels), (64,), generator=generator)
            return F.cross_entropy(net(_augment(data.train_images[pick], generator)), data.train_labels[pick])

        train(net.parameters(), step_loss, Schedule(3e-3, CLASSIFIER_STEPS, warmup=20), seed=0, modules=[net],
              name=f"fid-proxy classifier {data.name}", log_every=0)  # fmt: skip
        return dict(net.state_dict()), {"heldout_accuracy": accuracy(net, data.heldout_images, data.heldout_labels)}

    cached = cached_tensors("diffusion-classifier", net, config, build)
    net.load_state_dict(cached.tensors)
    net.heldout_accuracy = float(cached.meta["heldout_accuracy"])  # type: ignore[assignment]
    return net.eval()


@torch.no_grad()
def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (net(images).argmax(-1) == labels).float().mean().item()


@torch.no_grad()
def features(net: FeatureNet, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([net.features(images[i : i + batch]) for i in range(0, len(images), batch)]).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½), with symmetric eigendecompositions."""
    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    root_a = _sqrt_psd(cov_a)
    cross = _sqrt_psd(root_a @ cov_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


@dataclass(frozen=True)
class RealStats:
    features: torch.Tensor
    floor: float  # FID proxy between two halves of the held-out images
    classifier_accuracy: float


@lru_cache(maxsize=8)
def real_stats(dataset: str, resolution: int) -> RealStats:
    data: ImageSet = image_set(dataset, resolution)
    net = classifier(dataset, resolution)
    real = features(net, to_uint8(data.heldout_images).float() / 127.5 - 1)
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    half = len(real) // 2
    floor = frechet_distance(real[order[:half]], real[order[half:]])
    return RealStats(real, floor, net.heldout_accuracy)  # type: ignore[arg-type]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images as displayed: [-1, 1] → 0…255 (quality is measured on what a user would save)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def image_quality(images: torch.Tensor, labels: torch.Tensor, dataset: str, resolution: int) -> dict:
    """FID proxy (with its bootstrap error) and class accuracy of generated uint8 images."""
    net, real = classifier(dataset, resolution), real_stats(dataset, resolution)
    pixels = images.float() / 127.5 - 1
    generated = features(net, pixels)
    fid = frechet_distance(generated, real.features)
    generator = torch.Generator().manual_seed(0)
    resampled = [
        frechet_distance(
            generated[torch.randint(0, len(generated), (len(generated),), generator=generator)], real.features
        )  # fmt: skip
        for _ in range(BOOTSTRAP)
    ]
    return {
        "fid_proxy": fid,
        "fid_proxy_stderr": float(np.std(resampled)),
        "fid_proxy_floor": real.floor,
        "fid_proxy_images": len(images),
        "fid_proxy_real_images": len(real.features),
        "class_accuracy": accuracy(net, pixels, labels),
        "classifier_heldout_accuracy": real.classifier_accuracy,
    }


def pixel_distance(images: torch.Tensor, reference: torch.Tensor) -> dict:
    """Mean MSE (on [0, 1] pixels) and PSNR to the reference's images of the same seeds and labels."""
    diff = (images.float() - reference.float()) / 255.0
    mse = diff.pow(2).flatten(1).mean(1)
    psnr = torch.where(mse > 0, 10 * torch.log10(1 / mse.clamp_min(1e-12)), torch.tensor(100.0))
    return {"mse_to_reference": mse.mean().item(), "psnr_to_reference": psnr.mean().item()}
