"""The training family's runner: one seeded training of a task under a plan, watched to its target.

A `Plan` is the reference recipe (AdamW, warm-up + cosine, the task's data, cross-entropy, one
stage) with the parts a method replaces: the optimiser, the learning-rate schedule, a change of
architecture, the loss, the data, the input shape per step (curricula), growth stages and a
controller that reacts to evaluations. Every plan runs through `executors.training.train` — the
one loop — stage by stage, with `on_step` evaluating the held-out metric every `eval_every`
steps. The clock stops while evaluating: time to target is training time only (as AlgoPerf
excludes its evaluations). A run ends at the target, at its step or time budget, on a
non-finite loss (diverged), or when the learning curve predicts a miss (extrapolation.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from executors.families.training.extrapolation import StopRule
from executors.families.training.tasks import FULL, Shape, cross_entropy, lr_factor
from executors.training import OptimizerFactory, Schedule, build_optimizer, train

RULE = StopRule()


@dataclass(frozen=True)
class Stage:
    """`steps` optimiser steps on the model `enter(previous model, task)` returns (None: the same model)."""

    steps: int
    enter: Callable[[nn.Module, Any], nn.Module] | None = None
    name: str = "train"


class Controller:
    """Scales the learning rate from what the evaluations show (AccelAT); 1.0 until told otherwise."""

    scale = 1.0

    def on_eval(self, step: int, metric: float) -> None:
        """Called after every evaluation with the metric (lower is better)."""


@dataclass(frozen=True)
class Plan:
    name: str = "reference"
    optimizer: OptimizerFactory | None = None  # None: AdamW
    lr_scale: float = 1.0  # on the task's reference learning rate
    lr_rule: Callable[[Any], float] | None = None  # workload → a further multiplier (a batch-size regime rule)
    schedule: Callable[[int, int, int], float] | None = None  # (step, budget, warm-up steps) → factor
    model: Callable[[nn.Module, Any], nn.Module] | None = None  # architecture change of each fresh model
    loss: Callable[[Any, nn.Module, Any], torch.Tensor] | None = None  # (task, model, batch) → loss
    data: Callable[[Any, Any], Any] | None = None  # (task, workload) → the examples it trains on
    shape: Callable[[int, Any], Shape] | None = None  # (step, workload) → the step's input shape
    stages: Callable[[Any, Any], list[Stage]] | None = None  # (task, workload) → growth stages
    controller: Callable[[], Controller] | None = None
    weight_decay: float | None = None  # None: the recipe's
    groups: Callable[[nn.Module], list[dict]] | None = None  # model → parameter groups with per-group options
    # What autograd keeps for backward, as (pack, unpack) of saved_tensors_hooks (FP8 activations);
    # the activation memory is measured on what `pack` returns
    saved: tuple[Callable[[torch.Tensor], Any], Callable[[Any], torch.Tensor]] | None = None
    notes: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What one seeded run did: whether and when it reached the target, its curve, its memory."""

    seed: int
    lr: float
    target: float
    reached: bool = False
    steps_to_target: int | None = None
    seconds_to_target: float | None = None
    examples_to_target: int | None = None
    steps: int = 0
    train_seconds: float = 0.0
    examples: int = 0
    final_metric: float = math.nan
    stopped: str = "budget"  # target, budget, time budget, extrapolation, diverged
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, train seconds, metric)
    predictions: list[dict] = field(default_factory=list)  # extrapolation: {"step", "predicted"}
    would_stop_at: int | None = None  # the first step the stop rule fired (recorded even where it may not stop)
    audit: bool = False  # allowed to finish: its final metric checks the extrapolation
    memory: dict = field(default_factory=dict)  # bytes: weights, gradients, optimizer_state, activations
    upstream_metric: float | None = None  # continual tasks: the metric on the domain pre-trained on
    lrs: list[float] = field(default_factory=list)  # the learning-rate factor of every step
    shapes: list[int] = field(default_factory=list)  # the input size of every step (0: full)
    stages: list[str] = field(default_factory=list)  # "name@first step" of every stage it ran

    @property
    def seconds_per_step(self) -> float:
        return self.train_seconds / max(self.steps, 1)

    @property
    def peak_bytes(self) -> int:
        return sum(self.memory.values())


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def _kept(packed: Any) -> list[torch.Tensor]:
    return [packed] if isinstance(packed, torch.Tensor) else [t for t in packed if isinstance(t, torch.Tensor)]


def _with_saved_bytes(
    compute: Callable[[], torch.Tensor], model: nn.Module, saved_as: tuple[Callable, Callable] | None
) -> tuple[torch.Tensor, int]:
    """The loss, and the bytes of what autograd keeps for its backward pass (weights excluded): the
    saved tensors themselves, or what the plan's `saved` pack turns them into."""
    pack_as, unpack_as = saved_as or (lambda tensor: tensor, lambda packed: packed)
    kept: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> Any:
        packed = pack_as(tensor)
        kept.extend(_kept(packed))
        return packed

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack_as):
        loss = compute()
    owned = {p.data_ptr() for p in model.parameters()}
    return loss, _tensor_bytes(t for t in kept if t.data_ptr() not in owned)


def _saving(compute: Callable[[], torch.Tensor], saved_as: tuple[Callable, Callable] | None) -> torch.Tensor:
    if saved_as is None:
        return compute()
    with torch.autograd.graph.saved_tensors_hooks(*saved_as):
        return compute()


class _Monitor:
    """Evaluates, times, decides to stop and measures memory for one run (the `on_step` of train())."""

    def __init__(
        self,
        task,
        workload,
        outcome: Outcome,
        factor: Callable[[int], float],
        *,
        stop_at_target: bool,
        extrapolate: bool,
    ):
        self.task, self.workload, self.outcome, self.factor = task, workload, outcome, factor
        self.stop_at_target, self.extrapolate = stop_at_target, extrapolate
        self.started = time.perf_counter()
        self.eval_seconds = 0.0
        self.area = 0.0  # learning-rate area so far
        self.fit_points: list[tuple[float, float]] = []  # (area, metric) since the last stage change
        self.optimizers: list[torch.optim.Optimizer] = []
        self.model: nn.Module | None = None
        self.controller: Controller | None = None
        self.state_measured = False

    def train_seconds(self) -> float:
        return time.perf_counter() - self.started - self.eval_seconds

    def new_stage(self, model: nn.Module) -> None:
        self.model, self.fit_points, self.state_measured = model, [], False

    def step(self, step: int, loss: float) -> bool:
        outcome, budget = self.outcome, self.workload.budget_steps
        outcome.steps = step + 1
        self.area += outcome.lrs[-1] if outcome.lrs else 0.0
        if not self.state_measured and self.optimizers:  # the optimiser's states exist after its first step
            state = _tensor_bytes(v for s in self.optimizers[-1].state.values() for v in s.values())
            outcome.memory["optimizer_state"] = max(outcome.memory.get("optimizer_state", 0), state)
            self.state_measured = True
        if not math.isfinite(loss):
            outcome.stopped = "diverged"
            return True
        if (step + 1) % self.workload.eval_every and step + 1 < budget:
            return False
        seconds = self.train_seconds()
        started = time.perf_counter()
        assert self.model is not None
        self.model.eval()
        metric = self.task.evaluate(self.model, self.workload)
        self.model.train()
        self.eval_seconds += time.perf_counter() - started
        outcome.curve.append((step + 1, round(seconds, 4), metric))
        outcome.final_metric = metric
        if self.controller is not None:
            self.controller.on_eval(step + 1, metric)
        if not math.isfinite(metric):
            outcome.stopped = "diverged"
            return True
        if metric <= outcome.target and not outcome.reached:
            outcome.reached, outcome.steps_to_target = True, step + 1
            outcome.seconds_to_target, outcome.examples_to_target = seconds, outcome.examples
            if self.stop_at_target:
                outcome.stopped = "target"
                return True
        if self.workload.budget_seconds and seconds > self.workload.budget_seconds:
            outcome.stopped = "time budget"
            return True
        return self._extrapolation(step, metric) and self.extrapolate and not outcome.reached

    def _extrapolation(self, step: int, metric: float) -> bool:
        outcome, budget = self.outcome, self.workload.budget_steps
        self.fit_points.append((self.area, metric))
        if step + 1 >= budget:
            return False
        x_end = self.area + sum(self.factor(s) for s in range(step + 1, budget))
        xs, ys = zip(*self.fit_points, strict=True)
        predicted = RULE.predicted(xs, ys, x_end)
        if predicted is None:
            return False
        outcome.predictions.append({"step": step + 1, "predicted": round(predicted, 5)})
        says = not outcome.reached and RULE.says_stop(
            predicted, outcome.target, (step + 1) / budget, len(self.fit_points)
        )
        if says and outcome.would_stop_at is None:
            outcome.would_stop_at = step + 1
        return says


@dataclass
class Trainer:
    """The runner of the training family: `train_to_target` is its call."""

    model: nn.Module  # the plan's model for seed 0 (the registry suite and memory figures read it)
    task: Any
    plan: Plan = field(default_factory=Plan)
    stats: dict = field(default_factory=dict)

    def train_to_target(
        self,
        workload,
        *,
        seed: int,
        target: float,
        lr_scale: float = 1.0,
        stop_at_target: bool = True,
        extrapolate: bool = True,
        keep: list | None = None,
    ) -> Outcome:
        """One run; `keep`, when given, receives the trained model (a client's run returns it)."""
        task, plan, budget = self.task, self.plan, workload.budget_steps
        warmup = round(task.recipe.warmup * budget)
        schedule_of, shape_of = plan.schedule or lr_factor, plan.shape or (lambda step, workload: FULL)
        controller = plan.controller() if plan.controller else None

        def factor(step: int) -> float:
            scale = controller.scale if controller is not None else 1.0
            return schedule_of(step, budget, warmup) * shape_of(step, workload).lr_scale * scale

        lr = task.recipe.lr * plan.lr_scale * lr_scale * (plan.lr_rule(workload) if plan.lr_rule else 1.0)
        outcome = Outcome(seed=seed, lr=lr, target=target, audit=not stop_at_target)
        monitor = _Monitor(task, workload, outcome, factor, stop_at_target=stop_at_target, extrapolate=extrapolate)
        monitor.controller = controller
        source = plan.data(task, workload) if plan.data else task.training_data(workload)
        loss_of = plan.loss or cross_entropy
        model = task.new_model(seed)
        model = plan.model(model, task) if plan.model else model
        stages = plan.stages(task, workload) if plan.stages else [Stage(budget)]
        generator, offset = torch.Generator().manual_seed(seed), 0
        weight_decay = task.recipe.weight_decay if plan.weight_decay is None else plan.weight_decay

        def make_optimizer(groups, schedule):
            optimizer = (plan.optimizer or build_optimizer)(groups, schedule)
            monitor.optimizers.append(optimizer)
            return optimizer

        for stage in stages:
            if stage.enter is not None:
                model = stage.enter(model, task)
            monitor.new_stage(model)
            outcome.stages.append(f"{stage.name}@{offset}")
            params = [p for p in model.parameters() if p.requires_grad]
            groups = plan.groups(model) if plan.groups else params
            outcome.memory["weights"] = max(
                outcome.memory.get("weights", 0), _tensor_bytes(model.state_dict().values())
            )
            outcome.memory["gradients"] = max(outcome.memory.get("gradients", 0), _tensor_bytes(params))

            def step_loss(step: int, gen: torch.Generator, model=model, offset=offset) -> torch.Tensor:
                shape = shape_of(offset + step, workload)
                outcome.lrs.append(round(factor(offset + step), 6))
                outcome.shapes.append(shape.size or 0)
                batch = task.batch(source, gen, workload, offset + step, shape)
                outcome.examples += task.examples(batch)
                if step == 0:  # what the backward pass keeps: the activation memory of a step
                    loss, kept_bytes = _with_saved_bytes(lambda: loss_of(task, model, batch), model, plan.saved)
                    outcome.memory["activations"] = max(outcome.memory.get("activations", 0), kept_bytes)
                    return loss
                return _saving(lambda: loss_of(task, model, batch), plan.saved)

            def stage_factor(s: int, offset: int = offset) -> float:
                return factor(offset + s)

            def stage_step(s: int, loss: float, offset: int = offset) -> bool:
                return monitor.step(offset + s, loss)

            schedule = Schedule(
                lr, stage.steps, weight_decay=weight_decay, betas=task.recipe.betas, clip=task.recipe.clip
            )
            result = train(
                groups,
                step_loss,
                schedule,
                seed=seed,
                modules=[model],
                name=f"{plan.name}:{stage.name}",
                log_every=0,
                generator=generator,
                threads=None,
                make_optimizer=make_optimizer,
                lr_factor=stage_factor,
                on_step=stage_step,
            )
            offset += stage.steps
            if result.stopped_early:
                break
        outcome.train_seconds = monitor.train_seconds()
        if task.upstream is not None:
            outcome.upstream_metric = task.evaluate(model.eval(), workload, task.upstream)
        if keep is not None:
            keep.append(model.eval())
        return outcome


def trainer(bundle, config, plan: Plan) -> Trainer:
    """A method's runner: its plan over the bundle's task (every training method's `apply` returns one)."""
    from executors.registry import config_to_json

    model = bundle.data.new_model(0)
    model = plan.model(model, bundle.data) if plan.model else model
    return Trainer(model.eval(), bundle.data, plan, {"config": config_to_json(config)})
