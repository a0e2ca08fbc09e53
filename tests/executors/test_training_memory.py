"""Training family II: memory and precision methods — the bytes they claim to save are measured on
the runs themselves (weights, gradients, optimizer state, saved activations), and the mechanisms
behind them (low-rank projection, FP8 groups with range expansion, loss scaling) do what they say."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch

import executors.methods  # noqa: F401  (registers every method)
from executors.families.training import FIXTURE_WORKLOAD, recipes
from executors.methods.train.coat import dequantize, quantize
from executors.methods.train.lowrank import LowRankAdam, projected_groups
from executors.registry import default_config, get_method


@pytest.fixture(scope="module")
def lm():
    return recipes.fixture_bundle("lm")


def _run(bundle, method_id: str, config=None):
    runner: Any = get_method(method_id).apply(bundle, config or default_config(method_id))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return runner.train_to_target(
            FIXTURE_WORKLOAD, seed=1, target=-math.inf, stop_at_target=False, extrapolate=False
        )
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(lm):
    methods = ("train.reference", "train.memory.galore", "train.memory.fira", "train.memory.coat_fp8")
    return {m: _run(lm, m) for m in methods}


def test_low_rank_and_fp8_states_take_fewer_optimizer_bytes_and_still_train(runs):
    reference = runs["train.reference"]
    for method in ("train.memory.galore", "train.memory.fira", "train.memory.coat_fp8"):
        mine = runs[method]
        assert mine.memory["optimizer_state"] < reference.memory["optimizer_state"], method
        assert mine.memory["weights"] == reference.memory["weights"]  # the model is the same size
        assert mine.final_metric < mine.curve[0][2]  # it still learns
    # FP8 moments: about one byte a value against float32's four (scales and exponents on top).
    assert runs["train.memory.coat_fp8"].memory["optimizer_state"] < 0.35 * reference.memory["optimizer_state"]
    assert runs["train.memory.coat_fp8"].memory["activations"] < 0.6 * reference.memory["activations"]


def test_fira_adds_back_what_the_projection_drops(runs):
    galore, fira = runs["train.memory.galore"], runs["train.memory.fira"]
    assert galore.memory["optimizer_state"] == pytest.approx(fira.memory["optimizer_state"], rel=0.01)
    assert galore.final_metric != fira.final_metric  # the residual changes the updates


def test_the_projected_moments_have_the_rank_and_the_projector_is_refreshed():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(8, 24))
    optimizer = LowRankAdam([{"params": [weight], "rank": 2, "update_gap": 3, "scale": 1.0, "residual": False}], 1e-2)
    projections = []
    for _ in range(4):
        weight.grad = torch.randn(8, 24)
        optimizer.step()
        projections.append(optimizer.state[weight]["projection"].clone())
    state = optimizer.state[weight]
    assert state["exp_avg"].shape == (2, 24) and state["projection"].shape == (8, 2)  # the shorter side projected
    assert torch.equal(projections[0], projections[2]) and not torch.equal(projections[2], projections[3])


def test_only_block_matrices_are_projected(lm):
    model = lm.data.new_model(0)
    low, rest = projected_groups(model, rank=4, update_gap=10, scale=1.0, residual=True)
    names = {id(p): n for n, p in model.named_parameters()}
    assert low["params"] and all(names[id(p)].startswith("layers.") and p.dim() == 2 for p in low["params"])
    assert any(names[id(p)] == "tok_embeddings.weight" for p in rest["params"])


def test_range_expansion_lowers_the_fp8_error_of_a_narrow_group():
    torch.manual_seed(0)
    moments = torch.rand(4, 128) * 1e-3 + 1e-3  # a second moment: positive, a narrow range
    errors = {}
    for expand in (False, True):
        back = dequantize(quantize(moments, 128, expand))
        errors[expand] = ((back - moments).abs() / moments).mean().item()
    assert back.shape == moments.shape and back.dtype == moments.dtype
    assert errors[True] < errors[False] / 2


def test_mixed_precision_keeps_fewer_activation_bytes_and_trains_alike(lm):
    reference = _run(lm, "train.reference")
    for dtype in ("bfloat16", "float16"):
        amp: Any = default_config("train.precision.amp")
        config = replace(amp, dtype=dtype)
        mine = _run(lm, "train.precision.amp", config)
        assert mine.memory["activations"] < reference.memory["activations"], dtype
        assert mine.memory["optimizer_state"] == reference.memory["optimizer_state"]  # float32 master state
        assert abs(mine.final_metric - reference.final_metric) < 0.05, dtype


def test_a_float16_step_that_overflows_is_skipped_and_the_scale_halves():
    from executors.methods.train.amp import LossScale, ScaledStep

    weight = torch.nn.Parameter(torch.ones(4))
    scale = LossScale(1024.0, growth_interval=2)
    optimizer = ScaledStep([weight], scale, lr=0.1)
    weight.grad = torch.tensor([1.0, math.inf, 0.0, 0.0])
    optimizer.step()
    assert torch.equal(weight.detach(), torch.ones(4)) and scale.value == 512.0 and scale.skipped == 1
    for _ in range(2):
        weight.grad = torch.ones(4)
        optimizer.step()
    assert scale.value == 1024.0 and weight.detach()[0] < 1.0  # two clean steps: stepped, scale doubled
