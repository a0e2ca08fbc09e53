"""One seeded training loop for everything the executors train: zoo models, long-context
fine-tunes, pruning recovery, distilled heads and prompt tokens, QAT students, calibration.

The caller supplies the loss of a step (it draws its batch with the loop's generator, so the
batch order is fixed by the seed); the loop owns the optimiser, the warm-up + cosine schedule,
gradient clipping, the thread count, train/eval modes and an optional early stop on a loss
plateau. Training runs on one thread by default: weights must not depend on the machine's core
count. A training-speed benchmark (executors/families/training) instead runs on the thread
count of the hardware class it measures, brings its own optimiser or learning-rate factor, and
watches every step (`on_step`: evaluation, time to a target, early stop by extrapolation).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)

StepLoss = Callable[[int, torch.Generator], torch.Tensor]
OptimizerFactory = Callable[[list, "Schedule"], torch.optim.Optimizer]


@dataclass(frozen=True)
class Schedule:
    lr: float
    steps: int
    warmup: int = 0  # linear warm-up steps; 0 = none
    decay: str = "cosine"  # cosine to zero over `steps`, or "constant"
    optimizer: str = "adamw"  # adamw or adam
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    clip: float | None = None  # max gradient norm


@dataclass(frozen=True)
class EarlyStop:
    """Stop once the mean loss of the last `window` steps has not improved by `min_delta` for `patience` windows."""

    window: int = 20
    patience: int = 3
    min_delta: float = 1e-3


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    steps: int = 0  # optimiser steps taken (fewer than the schedule's when stopped early)

    @property
    def last_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan


@contextlib.contextmanager
def frozen(module: nn.Module):
    """No gradients into `module` while a loop trains something that reads it (its flags come back after)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _factor(schedule: Schedule) -> Callable[[int], float]:
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / schedule.warmup) if schedule.warmup else 1.0
        if schedule.decay == "constant":
            return warm
        return warm * 0.5 * (1 + math.cos(math.pi * step / schedule.steps))

    return factor


def build_optimizer(groups: Iterable, schedule: Schedule) -> torch.optim.Optimizer:
    if schedule.optimizer == "adam":
        return torch.optim.Adam(groups, lr=schedule.lr, betas=schedule.betas, weight_decay=schedule.weight_decay)
    if schedule.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=schedule.lr, betas=schedule.betas, weight_decay=schedule.weight_decay)
    raise ValueError(f"unknown optimizer {schedule.optimizer!r}; use adam or adamw")


def train(
    params: Iterable[nn.Parameter] | Iterable[dict],
    step_loss: StepLoss,
    schedule: Schedule,
    *,
    seed: int,
    modules: Iterable[nn.Module] = (),
    name: str = "training",
    log_every: int = 50,
    early_stop: EarlyStop | None = None,
    generator: torch.Generator | None = None,
    clip_params: Iterable[nn.Parameter] | None = None,
    threads: int | None = 1,
    make_optimizer: OptimizerFactory | None = None,
    lr_factor: Callable[[int], float] | None = None,
    on_step: Callable[[int, float], bool] | None = None,
) -> TrainResult:
    """Runs `schedule.steps` steps of `step_loss(step, generator)`; `modules` are set to train mode
    for the loop and back to eval after. `params` may be parameter groups with their own lr;
    `clip_params` narrows the gradient clipping to some of them.

    `threads=None` keeps the caller's thread count; `make_optimizer(groups, schedule)` replaces
    AdamW/Adam; `lr_factor(step)` replaces the warm-up + cosine factor; `on_step(step, loss)` runs
    after every optimiser step and stops the loop by returning True."""
    groups = list(params)
    result = TrainResult()
    if schedule.steps <= 0 or not groups:
        return result
    generator = generator or torch.Generator().manual_seed(seed)
    optimizer = (make_optimizer or build_optimizer)(groups, schedule)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor or _factor(schedule))
    clipped = list(clip_params) if clip_params is not None else [p for g in optimizer.param_groups for p in g["params"]]
    modules = list(modules)
    previous_threads, started = torch.get_num_threads(), time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    best, stale = math.inf, 0
    try:
        with torch.inference_mode(False), torch.enable_grad():  # a caller may hold inference mode
            for module in modules:
                module.train()
            for step in range(schedule.steps):
                loss = step_loss(step, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if schedule.clip is not None:
                    torch.nn.utils.clip_grad_norm_(clipped, schedule.clip)
                optimizer.step()
                lr_schedule.step()
                result.losses.append(loss.item())
                result.steps = step + 1
                if log_every and step % log_every == 0:
                    log.info("%s step %d/%d loss %.4f", name, step, schedule.steps, result.losses[-1])
                if on_step is not None and on_step(step, result.losses[-1]):
                    result.stopped_early = True
                    break
                if early_stop and (step + 1) % early_stop.window == 0:
                    recent = sum(result.losses[-early_stop.window :]) / early_stop.window
                    best, stale = (recent, 0) if recent < best - early_stop.min_delta else (best, stale + 1)
                    if stale >= early_stop.patience:
                        result.stopped_early = True
                        log.info("%s stopped at step %d: loss plateau at %.4f", name, step + 1, best)
                        break
    finally:
        torch.set_num_threads(previous_threads)
        for module in modules:
            module.eval()
    result.seconds = time.perf_counter() - started
    return result
