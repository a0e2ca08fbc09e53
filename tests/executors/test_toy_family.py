"""A second classification family, registered from this file alone (docs/architecture.md, "add a family").

A 2-layer MLP on scikit-learn's digits, one workload kind, its harness hook, fixture and one method
that prunes it: no shared module changes, and the CLI's catalogue, the protocol and the registry
suite take it as they take the built-in families.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pytest
import torch
from conformance import Case, apply_case, claim_failures

from executors import families
from executors.protocol import KindHarness, Quality, prepare
from executors.registry import (
    Method,
    MethodConfig,
    ModelBundle,
    ModelSpec,
    default_config,
    get_method,
    register_method,
    unregister_method,
)
from executors.training import Schedule, train
from profiles.models import workload_id_for

CPU = torch.device("cpu")


@dataclass(frozen=True)
class DigitsWorkload:  # 1. the workload: a frozen dataclass with shape/row/id/fits
    batch_size: int = 16

    def shape(self) -> dict:
        return {"kind": "toy-classify", **asdict(self)}

    @property
    def id(self) -> str:
        return workload_id_for(self.shape())

    def row(self) -> dict:
        return {
            "id": self.id,
            "kind": "toy-classify",
            "batch_size": self.batch_size,
            "objective": "latency",
            "params": {},
        }

    def fits(self, bundle) -> str | None:
        return None if self.batch_size <= len(bundle.data["test_x"]) else "more images than the held-out split"


@dataclass
class Classifier:  # 2. the runner protocol: classify
    model: torch.nn.Module
    stats: dict = field(default_factory=dict)

    @torch.inference_mode()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).argmax(-1)


def accuracy(runner, bundle) -> float:
    return (runner.classify(bundle.data["test_x"]) == bundle.data["test_y"]).float().mean().item()


class DigitsHarness(KindHarness):  # 3. the harness hook: inputs, call, quality
    unit = "img/s"

    def session(self, bundle, workload, device, baseline, warmup):
        return bundle.data["test_x"][: workload.batch_size].to(device)

    def call(self, runner, session, workload, seed):
        return runner.classify(session)

    def quality(self, prepared, baseline, bundle, workload, session, outputs):
        mine, base = accuracy(prepared.runner, bundle), accuracy(baseline.runner, bundle)
        return Quality("heldout_accuracy", base, mine, mine - base)


def digits_fixture(root) -> ModelBundle:  # 4. the tiny fixture: trained here, seeded
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = torch.tensor(digits.data, dtype=torch.float32) / 16, torch.tensor(digits.target)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    step = lambda i, g: torch.nn.functional.cross_entropy(model(x[:1400]), y[:1400])  # noqa: E731
    train(model.parameters(), step, Schedule(1e-2, 150), seed=0, modules=[model], log_every=0)
    spec = ModelSpec("toy:digits-mlp", "digits-mlp", "mlp", sum(p.numel() for p in model.parameters()), layers=2)
    return ModelBundle(model.eval(), "toy-digits", spec, capabilities=frozenset({"linear_layers"}),
                       data={"test_x": x[1400:], "test_y": y[1400:]})  # fmt: skip


def observe(runner, bundle) -> dict:  # 5. what the registry suite compares with the reference
    return {"outputs": runner.model(bundle.data["test_x"][:32]).detach()}


@dataclass(frozen=True)
class PruneConfig(MethodConfig):
    fraction: float = 0.5


class MagnitudePrune(Method):  # 6. a method that changes it: zero the smallest weights of each layer
    def apply(self, bundle, config):
        pruned = torch.nn.Sequential(*(torch.nn.Linear(m.in_features, m.out_features) if isinstance(m, torch.nn.Linear)
                                       else m for m in bundle.model))  # fmt: skip
        pruned.load_state_dict(bundle.model.state_dict())
        for layer in pruned:
            if isinstance(layer, torch.nn.Linear):
                cut = layer.weight.abs().flatten().kthvalue(int(config.fraction * layer.weight.numel())).values
                layer.weight.data[layer.weight.abs() <= cut] = 0
        return families.default_runner(bundle, pruned.eval())


@pytest.fixture(scope="module")
def toy_family():
    families.register_family(families.Family(  # 7. one registration
        name="toy-digits", description="MLP digit classifier (test only)", runner_protocol="classify",
        kinds=(families.WorkloadKind("toy-classify", "toy-digits", DigitsWorkload, "baseline", DigitsHarness()),),
        quality_metrics=("heldout_accuracy",), runner=Classifier, fixture=digits_fixture, hooks={"observe": observe},
    ))  # fmt: skip
    register_method("toy.magnitude_prune", PruneConfig, category="pruning", families=("toy-digits",),
                    changes=("weights", "outputs"), paper="magnitude pruning (test only)")(MagnitudePrune)  # fmt: skip
    yield digits_fixture(None)
    unregister_method("toy.magnitude_prune")
    families.unregister_family("toy-digits")


def test_the_toy_family_is_listed_and_its_workloads_parse(toy_family):
    row = next(r for r in families.families_catalogue() if r["name"] == "toy-digits")
    assert row["kinds"][0]["reference"] == "baseline" and "toy.magnitude_prune" in row["methods"]
    assert families.workload_from_json({"kind": "toy-classify", "batch_size": 8}) == DigitsWorkload(8)


def test_the_protocol_measures_it_against_its_reference(toy_family):
    method = prepare(toy_family, [default_config("toy.magnitude_prune")], CPU)
    node = {"id": "test-node", "hardware_class": "test-cpu"}
    records = {r["method_id"]: r for r in families.measure(toy_family, DigitsWorkload(16), [method], node, device=CPU)}
    assert records["baseline"]["speedup"] == 1.0 and records["baseline"]["quality_value"] > 0.8
    pruned = records["toy.magnitude_prune"]
    assert pruned["status"] == "ok" and pruned["quality_metric"] == "heldout_accuracy" and pruned["repeats"] >= 5
    assert pruned["metrics"]["throughput_unit"] == "img/s" and pruned["peak_mem_mb"] > 0


def test_the_registry_suite_passes_its_method_and_rejects_a_no_op(toy_family):
    runner, reference = apply_case(Case("toy.magnitude_prune", "toy-digits"), toy_family)
    method = get_method("toy.magnitude_prune")
    assert claim_failures(method, "toy-digits", runner, reference, toy_family) == []
    noop = families.default_runner(toy_family, toy_family.model)
    failures = claim_failures(method, "toy-digits", noop, reference, toy_family)
    assert {f.split(":")[0] for f in failures} == {"outputs", "weights"}
