"""The training family: train-to-target workloads, the engine's runs, the extrapolation, the
protocol's records (misses stay misses, seeds pair, tuning is setup) and the shared parts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from executors import families
from executors.families.training import FIXTURE_WORKLOAD, recipes
from executors.families.training.engine import Trainer
from executors.families.training.extrapolation import StopRule, error_summary, fit_power_law
from executors.families.training.tasks import lr_factor
from executors.families.training.workload import TrainWorkload
from executors.protocol import prepare
from executors.registry import (
    Method,
    MethodConfig,
    default_config,
    get_method,
    register_method,
    unregister_method,
)

CPU = torch.device("cpu")
NODE = {"id": "test-node", "hardware_class": "test-cpu-t1"}
# Short enough to measure in seconds; the reference reaches the target on every seed by its budget.
SMALL = TrainWorkload(
    batch_size=8, seq_len=16, budget_steps=24, eval_every=4, data_tokens=2048, tuning_lrs=2, target=5.12
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lm():
    return recipes.fixture_bundle("lm")


def reference(bundle) -> Trainer:
    runner = get_method("train.reference").apply(bundle, default_config("train.reference"))
    assert isinstance(runner, Trainer)
    return runner


def test_workloads_parse_with_limits_and_a_stable_id():
    workload = families.workload_from_json({"kind": "train-to-target", "batch_size": 8, "target": 2.5})
    assert workload == TrainWorkload(batch_size=8, target=2.5) and workload.id == TrainWorkload(8, target=2.5).id
    assert workload.row()["steps"] == workload.budget_steps and workload.row()["params"]["target"] == 2.5
    with pytest.raises(ValueError, match="tuning_lrs"):
        families.workload_from_json({"kind": "train-to-target", "tuning_lrs": 4})
    with pytest.raises(ValueError, match="eval_every"):
        TrainWorkload(budget_steps=10, eval_every=20)
    assert families.parse_grid("train batch=8,16 steps=40")[1] == TrainWorkload(batch_size=16, budget_steps=40)


def test_a_run_reaches_a_reachable_target_and_records_its_time_steps_and_memory(lm):
    runner = reference(lm)
    outcome = runner.train_to_target(SMALL, seed=1, target=5.4)  # the first evaluation is already below it
    assert outcome.reached and outcome.stopped == "target" and outcome.steps_to_target == SMALL.eval_every
    assert 0 < outcome.seconds_to_target <= outcome.train_seconds and outcome.examples_to_target == 4 * 8 * 16
    warmup = round(lm.data.recipe.warmup * SMALL.budget_steps)  # the reference: warm-up, then cosine
    assert outcome.lrs == [round(lr_factor(s, SMALL.budget_steps, warmup), 6) for s in range(4)]
    params = sum(p.numel() for p in runner.model.parameters())
    # AdamW keeps two moments per parameter: its state is measured, not assumed.
    assert outcome.memory["optimizer_state"] >= 2 * 4 * params and outcome.memory["activations"] > 0


def test_a_diverging_run_stops_and_is_a_miss(lm):
    runner = reference(lm)
    outcome = runner.train_to_target(SMALL, seed=1, target=1.0, lr_scale=1e6)
    assert not outcome.reached and outcome.stopped == "diverged" and outcome.steps < SMALL.budget_steps


def test_the_power_law_fit_recovers_a_curve_and_the_rule_stops_only_hopeless_runs():
    xs = [float(x) for x in range(1, 30)]
    fit = fit_power_law(xs, [1.0 + 2.0 * x**-0.5 for x in xs])
    assert fit is not None and abs(fit.predict(100.0) - 1.2) < 0.02 and fit.rmse < 1e-3
    rule = StopRule()
    assert rule.says_stop(1.3, target=1.1, fraction=0.5, points=5)
    assert not rule.says_stop(1.3, target=1.1, fraction=0.2, points=5)  # too early to trust a fit
    assert not rule.says_stop(1.12, target=1.1, fraction=0.5, points=5)  # within the margin
    summary = error_summary(
        [{"final": 1.0, "reached": True, "would_stop_at": 20, "predictions": [{"step": 20, "predicted": 1.1}]}]
    )
    assert summary["false_stops"] == 1 and math.isclose(summary["median_relative_error"], 0.1)


@dataclass(frozen=True)
class FrozenConfig(MethodConfig):
    version: int = 1


@pytest.fixture
def frozen_method():
    """A method that never learns (a zero learning rate): it must be recorded as a miss."""
    from executors.families.training.engine import Plan, trainer

    @register_method(
        "test.train.frozen",
        FrozenConfig,
        category="test",
        families=("training",),
        changes=("outputs",),
        paper="learns nothing",
        phase="training",
    )
    class Frozen(Method):
        def apply(self, bundle, config):
            return trainer(bundle, config, Plan("frozen", lr_scale=0.0))

    yield get_method("test.train.frozen")
    unregister_method("test.train.frozen")


@pytest.mark.slow
def test_the_protocol_records_a_miss_as_a_miss_and_pairs_the_seeds(lm, frozen_method):
    methods = [prepare(lm, [default_config(m)], CPU) for m in ("test.train.frozen", "train.optim.adabelief")]
    records = {r["method_id"]: r for r in families.measure(lm, SMALL, methods, NODE, device=CPU, reps=5)}
    reference, missed, other = (
        records["train.reference"],
        records["test.train.frozen"],
        records["train.optim.adabelief"],
    )
    assert reference["status"] == "ok" and reference["speedup"] == 1.0 and reference["metrics"]["reached_target"]
    assert missed["status"] == "ok" and missed["speedup"] is None and missed["latency_p50_s"] is None
    assert not any(missed["metrics"]["reached"]) and set(missed["metrics"]["time_to_target_s"]) == {None}
    assert missed["metrics"]["seed_speedups"] == [None] * len(missed["metrics"]["seeds"])
    # The report seeds are the same for every method (1, 2, …): tuning ran on seed 0, apart.
    assert missed["metrics"]["seeds"][:5] == [1, 2, 3, 4, 5] and other["metrics"]["seeds"][:5] == [1, 2, 3, 4, 5]
    tuning = other["metrics"]["tuning"]
    assert tuning["seed"] == 0 and [t["lr_multiplier"] for t in tuning["trials"]] == [1.0, 0.5]
    assert other["setup_s"] >= tuning["seconds"] > 0 and other["metrics"]["compile_s"] == 0.0
    assert reference["metrics"]["target_source"] == "workload" and other["metrics"]["target"] == SMALL.target
    # Quality is the final metric at the budget, measured on each method's own audit run.
    assert missed["quality_metric"] == "heldout_loss" and missed["quality_value"] > reference["quality_value"]
    assert missed["quality_delta"] < 0 and missed["metrics"]["extrapolation"]["audited_runs"] == 1
    assert other["peak_mem_mb"] > 0 and "optimizer state" in other["metrics"]["peak_mem_basis"]


def test_the_reference_applies_and_baseline_does_not_train(lm):
    kind = families.get_kind("train-to-target")
    assert kind.reference == "train.reference"
    assert families.misapplied([default_config("baseline")], kind, "training") is not None
    assert families.misapplied([default_config("train.optim.adabelief")], kind, "training") is None


def test_methods_say_why_they_do_not_apply(lm):
    cnn = recipes.fixture_bundle("cnn")
    assert "batch normalisation" in get_method("train.largebatch.ghost_bn").supports(lm, CPU)
    assert get_method("train.largebatch.ghost_bn").supports(cnn, CPU) is None
    assert "pre-trained" in get_method("train.schedule.rewarm").supports(lm, CPU)
    assert "image spectra" in get_method("train.curriculum.efficienttrain").supports(lm, CPU)
    assert "text" in get_method("train.data.quality_filter").supports(cnn, CPU)
    assert get_method("train.growth.gstack").supports(cnn, CPU) is not None


def test_growth_stacks_and_coalesces_the_blocks(lm):
    from executors.methods.train.growth import shallow, stacked
    from executors.methods.train.vcycle import coalesce, decoalesce

    model: Any = lm.data.new_model(0)
    small = shallow(model, 1)
    assert len(small.layers) == 1 and small.config.n_layers == 1
    grown = stacked(small, 2)
    assert torch.equal(grown.layers[0].attention.wq.weight, grown.layers[1].attention.wq.weight)
    assert grown.layers[0].attention.wq.weight is not grown.layers[1].attention.wq.weight  # copies, trained apart
    model = lm.data.new_model(0)  # a second, untouched model
    ffn = model.layers[0].feed_forward.w1.out_features
    merged = coalesce(model)
    assert len(merged.layers) == 1 and merged.layers[0].feed_forward.w1.out_features == ffn // 2
    back = decoalesce(merged)
    assert len(back.layers) == 2 and back.layers[1].feed_forward.w2.in_features == ffn


def test_a_client_run_saves_a_checkpoint_with_its_figures(lm, isolated_data_dir):
    from safetensors.torch import load_file

    from executors.families.training.checkpoint import train_for_client

    prepared = prepare(lm, [default_config("train.optim.adabelief")], CPU)
    item = {"workload": {**FIXTURE_WORKLOAD.shape(), "target": 5.4, "tuning_lrs": 1}, "seed": 0}
    stages: list[str] = []
    answer = train_for_client(lm, prepared.runner, item, lambda stage, detail=None: stages.append(stage))
    checkpoint = answer["checkpoint"]
    assert checkpoint["id"].startswith("ckpt-") and stages == ["tuning", "training"]
    weights = load_file(f"{checkpoint['path']}/model.safetensors")
    assert "layers.0.attention.wq.weight" in weights and answer["figures"]["reached_target"]
    model = lm.data.new_model(0)  # the saved weights are the trained model: its held-out metric comes back
    model.load_state_dict({**weights, "output.weight": weights["tok_embeddings.weight"]})
    assert lm.data.evaluate(model.eval(), FIXTURE_WORKLOAD) == pytest.approx(answer["figures"]["final_metric"])
    assert lm.data.evaluate(lm.data.new_model(0).eval(), FIXTURE_WORKLOAD) > answer["figures"]["final_metric"]
    assert answer["figures"]["steps"] == FIXTURE_WORKLOAD.budget_steps  # a client's run goes to its budget


def test_a_calibrated_target_is_the_references_metric_half_way_on_the_tuning_seed(lm):
    from dataclasses import replace

    from executors.families.training.harness import calibrate

    runner = reference(lm)
    workload = replace(SMALL, target=0.0)
    target = calibrate(runner, workload)
    curve = runner.train_to_target(workload, seed=0, target=-math.inf, stop_at_target=False, extrapolate=False).curve
    assert target == round(next(m for step, _, m in curve if step >= workload.budget_steps / 2), 4)
    assert curve[-1][2] < target < curve[0][2]


def test_the_worker_runs_a_training_item_to_a_checkpoint(lm, isolated_data_dir):
    from executors.registry import config_to_json
    from executors.worker import WorkerContext, run_item

    context = WorkerContext(server="http://unused", key="unused", node=NODE, bundles={"fixture:lm": lm})
    method = config_to_json(default_config("train.optim.exadam"))
    workload = {**FIXTURE_WORKLOAD.shape(), "target": 5.4, "tuning_lrs": 1}
    item = {"kind": "run", "model": "fixture:lm", "method": method, "workload": workload, "seed": 1, "prompts": []}
    answer = run_item(context, item)
    assert answer["records"] == [] and answer["outputs"]["method"] == "train.optim.exadam"
    assert answer["outputs"]["checkpoint"]["id"].startswith("ckpt-") and answer["outputs"]["figures"]["seed"] == 2
