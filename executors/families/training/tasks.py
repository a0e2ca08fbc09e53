"""Training tasks: what a recipe trains (a model built from a seed, or a pre-trained start), on
which examples, with which loss and held-out metric, and the reference recipe's hyper-parameters.

A task draws every batch with the training loop's generator, so the batch order is fixed by the
seed. A method changes how a task is trained through the engine's `Plan` (its data, its input
shape per step, its loss), never by branching on the task's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from executors.families.lm.model import LMConfig
from executors.families.training import data
from executors.families.training.models import build


@dataclass(frozen=True)
class Recipe:
    """The reference recipe: AdamW, linear warm-up over `warmup` of the budget, cosine to zero."""

    lr: float
    warmup: float = 0.05
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float | None = 1.0
    augment: float = 0.0  # images: random translation of up to this many pixels


@dataclass(frozen=True)
class Shape:
    """One step's input shape, as a curriculum (EfficientTrain, Multigrid) sets it."""

    size: int | None = None  # image side or sequence length; None: the task's own
    batch_scale: float = 1.0
    lr_scale: float = 1.0
    augment_scale: float = 1.0
    lowpass: bool = False  # an image reaches `size` by Fourier cropping instead of resampling


FULL = Shape()


@dataclass(frozen=True)
class Windows:
    """Where a token recipe draws training windows from: a stream, and the CHUNK-sized pieces a
    window may start in (all of them by default); `one_pass` walks a seeded permutation of
    non-overlapping windows instead of sampling with replacement (no token is seen twice)."""

    stream: torch.Tensor
    chunks: torch.Tensor | None = None
    one_pass: bool = False

    def draw(self, generator: torch.Generator, count: int, length: int, step: int) -> torch.Tensor:
        if self.one_pass:
            n = len(self.stream) // (length + 1)
            # A permutation fixed by the run's seed: drawn once from a generator seeded by the loop's own.
            order = torch.randperm(n, generator=torch.Generator().manual_seed(int(generator.initial_seed())))
            picks = order[(step * count + torch.arange(count)) % n]
            return torch.stack([self.stream[i * (length + 1) : (i + 1) * (length + 1)] for i in picks.tolist()])
        if self.chunks is None:
            starts = torch.randint(0, len(self.stream) - length - 1, (count,), generator=generator)
        else:
            chunk = self.chunks[torch.randint(0, len(self.chunks), (count,), generator=generator)]
            offset = torch.randint(0, data.CHUNK, (count,), generator=generator)
            starts = (chunk * data.CHUNK + offset).clamp(max=len(self.stream) - length - 1)
        return torch.stack([self.stream[s : s + length + 1] for s in starts.tolist()])


@dataclass(frozen=True)
class TokenData:
    """A mixture of window sources, each row of a batch drawn from one by weight."""

    parts: tuple[tuple[Windows, float], ...]

    def draw(self, generator: torch.Generator, count: int, length: int, step: int) -> torch.Tensor:
        if len(self.parts) == 1:
            return self.parts[0][0].draw(generator, count, length, step)
        weights = torch.tensor([w for _, w in self.parts])
        source = torch.multinomial(weights, count, replacement=True, generator=generator)
        rows = [
            self.parts[i][0].draw(generator, 1, length, step * count + row) for row, i in enumerate(source.tolist())
        ]
        return torch.cat(rows)


@dataclass
class TokenTask:
    """A byte-level LM trained on a text domain (from scratch, or continuing from `start`)."""

    name: str
    domain: data.TokenDomain
    model_config: LMConfig
    recipe: Recipe
    start: dict[str, torch.Tensor] | None = None  # pre-trained weights a continual task starts from
    upstream: data.TokenDomain | None = None  # the domain `start` was trained on (forgetting)
    eval_windows: int = 24
    architecture: str = "lm"
    metric: str = "heldout_loss"
    modality: str = "tokens"
    _heldout: dict = field(default_factory=dict)

    def new_model(self, seed: int) -> nn.Module:
        model = build(self.architecture, self.model_config, seed)
        if self.start is not None:
            model.load_state_dict(self.start)
        return model

    def training_data(self, workload) -> TokenData:
        """The reference's examples: the first `data_tokens` of the pool, sampled with replacement."""
        return TokenData(((Windows(self.domain.train[: workload.data_tokens + workload.seq_len + 1]), 1.0),))

    def batch(self, source: TokenData, generator, workload, step: int, shape: Shape) -> torch.Tensor:
        length = shape.size or workload.seq_len
        count = max(1, round(workload.batch_size * shape.batch_scale))
        return source.draw(generator, count, length, step)

    def logits(self, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return model(batch[:, :-1]), batch[:, 1:]

    def examples(self, batch: torch.Tensor) -> int:
        return batch[:, 1:].numel()  # tokens

    def heldout(self, workload, domain: data.TokenDomain | None = None) -> torch.Tensor:
        domain = domain or self.domain
        key = (domain.name, workload.seq_len)
        if key not in self._heldout:
            stream, length = domain.heldout, workload.seq_len + 1
            stride = (len(stream) - length) // self.eval_windows
            self._heldout[key] = torch.stack(
                [stream[i * stride : i * stride + length] for i in range(self.eval_windows)]
            )
        return self._heldout[key]

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, workload, domain: data.TokenDomain | None = None) -> float:
        windows = self.heldout(workload, domain)
        logits = model(windows[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)).item()

    def fits(self, workload) -> str | None:
        if workload.seq_len > self.model_config.max_seq_len:
            return f"seq_len {workload.seq_len} exceeds the model's context of {self.model_config.max_seq_len}"
        return None


@dataclass
class ImageTask:
    """A classifier trained from scratch on 16 × 16 digits; the metric is the held-out error rate."""

    name: str
    images: data.ImageSet
    model_config: Any
    recipe: Recipe
    architecture: str = "cnn"
    metric: str = "heldout_error"
    modality: str = "images"
    start: dict[str, torch.Tensor] | None = None
    upstream: None = None

    def new_model(self, seed: int) -> nn.Module:
        return build(self.architecture, self.model_config, seed)

    def training_data(self, workload) -> torch.Tensor:
        return torch.arange(len(self.images.train_y))

    def batch(self, source: torch.Tensor, generator, workload, step: int, shape: Shape):
        count = max(1, round(workload.batch_size * shape.batch_scale))
        picks = source[torch.randint(0, len(source), (count,), generator=generator)]
        images = self.images.train_x[picks]
        images = data.shift(images, self.recipe.augment * shape.augment_scale, generator)
        if shape.size is not None:
            images = data.lowpass(images, shape.size) if shape.lowpass else data.resize(images, shape.size)
        return images, self.images.train_y[picks]

    def logits(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        return model(images), labels

    def examples(self, batch) -> int:
        return len(batch[1])

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, workload, domain=None) -> float:
        predictions = model(self.images.heldout_x).argmax(-1)
        return (predictions != self.images.heldout_y).float().mean().item()

    def fits(self, workload) -> str | None:
        return None


def cross_entropy(task, model: nn.Module, batch) -> torch.Tensor:
    """The reference loss of every task: mean next-token or label cross-entropy."""
    logits, targets = task.logits(model, batch)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def lr_factor(step: int, total: int, warmup_steps: int) -> float:
    """Linear warm-up, then cosine to zero at `total` (the reference recipe's schedule)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def with_recipe(task, **changes):
    """The task under a changed recipe (a method's weight decay or augmentation), the task itself unchanged."""
    return replace(task, recipe=replace(task.recipe, **changes))
