"""The `training` family: recipes trained until a held-out target (`train-to-target`), the
AlgoPerf-style time-to-result protocol for training-speed methods (docs/training.md).

data.py the text domains and digits · models.py the CNN and ViT (the LM is the lm family's) ·
tasks.py what a recipe trains on and how it is scored · recipes.py the zoo and fixtures ·
workload.py the workload · engine.py the runner (`train_to_target`) and plans ·
extrapolation.py early stopping by learning-curve fits · harness.py the protocol hook ·
checkpoint.py a client's run with its saved checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from executors.families import Family, WorkloadKind, ZooEntry, register_family
from executors.families.training import recipes
from executors.families.training.harness import TrainHarness
from executors.families.training.workload import TrainWorkload, call_seconds, describe, parse_grid

# What the registry suite trains each method on: a few steps, a target never reached.
FIXTURE_WORKLOAD = TrainWorkload(
    batch_size=32,
    seq_len=16,
    budget_steps=12,
    eval_every=4,
    target=1e-3,
    data_tokens=2048,
    tuning_lrs=1,
    extrapolate=False,
)


def fixture(root: Path):
    """The tiny byte LM from scratch (≈ 10 k parameters): most methods apply to it."""
    return recipes.fixture_bundle("lm")


def fixture_for(method, root: Path):
    """The first tiny fixture a method applies to (a CNN for batch norm, a continual start for re-warming)."""
    for which in recipes.FIXTURES:
        bundle = recipes.fixture_bundle(which)
        if method.supports(bundle, torch.device("cpu")) is None:
            return bundle
    return fixture(root)


def observe(runner, bundle) -> dict:
    """What the registry suite compares: the trained model's held-out outputs after a short run with
    the runner's plan, and its schedule (learning-rate factor and input size of every step, stages)."""
    kept: list = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few tiny steps: more threads only wait for each other
    try:
        outcome = runner.train_to_target(
            FIXTURE_WORKLOAD, seed=0, target=FIXTURE_WORKLOAD.target, stop_at_target=False, extrapolate=False, keep=kept
        )
    finally:
        torch.set_num_threads(threads)
    task = bundle.data
    with torch.inference_mode():
        if task.modality == "tokens":
            windows = task.heldout(FIXTURE_WORKLOAD)[:4]
            outputs = kept[0](windows[:, :-1])
        else:
            outputs = kept[0](task.images.heldout_x[:32])
    return {
        "outputs": outputs,
        "schedule": (tuple(outcome.lrs), tuple(outcome.shapes), tuple(outcome.stages)),
        "train_memory": outcome.peak_bytes,
    }


def _run(bundle, runner, item: dict, stage) -> dict:
    from executors.families.training.checkpoint import train_for_client

    return train_for_client(bundle, runner, item, stage)


TRAIN = WorkloadKind(
    name=TrainWorkload.kind,
    family="training",
    workload=TrainWorkload,
    reference="train.reference",
    harness=TrainHarness(),
    keyword="train",
    parse=parse_grid,
    describe=describe,
    call_seconds=call_seconds,
)

register_family(
    Family(
        name="training",
        description="recipes trained to a held-out target: time and steps to target (AlgoPerf-style)",
        runner_protocol="train_to_target",
        kinds=(TRAIN,),
        quality_metrics=("heldout_loss", "heldout_error"),
        architectures=tuple(recipes.ARCHITECTURES.values()),
        zoo=tuple(
            ZooEntry(
                name,
                "training",
                entry.note,
                recipes.load_entry,
                recipes.build_entry(name) if entry.upstream else None,
                entry.config.parameter_count if entry.architecture == "lm" else None,
            )
            for name, entry in recipes.ENTRIES.items()
        ),
        fixture=fixture,
        hooks={"observe": observe, "fixture_for": fixture_for, "run": _run},
    )
)
