"""The `train-to-target` workload: train a recipe until its held-out metric reaches a target.

A workload fixes the batch, the step budget (and optionally a time budget), how often the
held-out metric is evaluated, the target (0 = set it from the reference recipe in the session),
the size of the reference's training set for text tasks, the tuning budget (how many learning
rates each method may try) and whether runs may stop early by learning-curve extrapolation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from executors.families.training.data import POOL_TOKENS
from executors.registry import ModelBundle, bounded
from profiles.models import workload_id_for

OBJECTIVES = ("time-to-accuracy",)
LR_MULTIPLIERS = (1.0, 0.5, 2.0)  # the tuning budget: the first `tuning_lrs` of these, the same for every method


@dataclass(frozen=True)
class TrainWorkload:
    batch_size: int = bounded(16, 1, 1024)
    seq_len: int = bounded(32, 4, 2048)  # text tasks: tokens per training and validation window
    budget_steps: int = bounded(120, 8, 100_000)
    budget_seconds: float = bounded(0.0, 0.0, 86_400.0)  # 0: no time budget beyond the steps
    eval_every: int = bounded(10, 1, 10_000)
    target: float = bounded(0.0, 0.0, 100.0)  # held-out loss or error rate to reach; 0: calibrate
    data_tokens: int = bounded(16_384, 256, POOL_TOKENS // 2)  # text tasks: the reference's training set
    tuning_lrs: int = bounded(3, 1, len(LR_MULTIPLIERS))
    extrapolate: bool = True
    objective: str = "time-to-accuracy"

    kind = "train-to-target"

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {self.objective!r}")
        if self.eval_every > self.budget_steps:
            raise ValueError(f"eval_every ({self.eval_every}) must not exceed budget_steps ({self.budget_steps})")

    def shape(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    @property
    def id(self) -> str:
        return workload_id_for(self.shape())

    @property
    def lr_multipliers(self) -> tuple[float, ...]:
        return LR_MULTIPLIERS[: self.tuning_lrs]

    def row(self) -> dict:
        params = {k: v for k, v in asdict(self).items() if k not in ("batch_size", "objective")}
        return {
            "id": self.id,
            "kind": self.kind,
            "batch_size": self.batch_size,
            "steps": self.budget_steps,
            "objective": self.objective,
            "params": params,
        }

    def fits(self, bundle: ModelBundle) -> str | None:
        return bundle.data.fits(self)


def describe(workload: TrainWorkload) -> str:
    target = f"→{workload.target:g}" if workload.target else "→calibrated"
    return f"b{workload.batch_size} {workload.budget_steps} steps {target}"


AXES = {
    "batch": "batch_size",
    "seq": "seq_len",
    "steps": "budget_steps",
    "eval": "eval_every",
    "target": "target",
    "data": "data_tokens",
    "lrs": "tuning_lrs",
    "seconds": "budget_seconds",
}


def parse_grid(text: str) -> list[TrainWorkload]:
    """`batch=16,32 steps=120 target=2.1 seq=32 data=16384 eval=10 lrs=3`: one workload per combination."""
    import itertools

    axes: dict[str, list] = {}
    for part in text.split():
        key, _, values = part.partition("=")
        if key not in AXES:
            raise ValueError(f"unknown axis {key!r}; use {', '.join(f'{k}=' for k in AXES)}")
        cast = float if key in ("target", "seconds") else int
        axes[AXES[key]] = [cast(v) for v in values.split(",")]
    names = list(axes)
    return [TrainWorkload(**dict(zip(names, combo, strict=True))) for combo in itertools.product(*axes.values())]


def call_seconds(params: int, workload: TrainWorkload, gflops: float = 10.0) -> float:
    """A rough cost of one training run: 6 × params FLOPs per example-token, over the step budget."""
    return 6 * params * workload.batch_size * workload.seq_len * workload.budget_steps / (gflops * 1e9)
