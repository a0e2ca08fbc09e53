"""Quality that can fail, and noise you can see: what the protocol records when a method is wrong.

- quality is measured through the runner's own model, even one that wraps the same weights the
  way torch.compile does (the old harness copied the baseline's figure there);
- under sampling, a speculative method with a broken acceptance rule shows a distribution
  distance well above the sampling noise floor, a correct one does not;
- a retrieval baseline at chance marks the record's quality uninformative;
- a method whose per-round ratios scatter is measured again and flagged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import torch

from executors import protocol
from executors.families import default_runner, measure
from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.harness import distribution_check
from executors.families.lm.workloads import LMWorkload
from executors.families.longctx.workload import LongContextWorkload
from executors.methods.spec import engine
from executors.protocol import NOISE_BOUND, prepare, ratio_spread
from executors.registry import Method, MethodConfig, default_config, register_method, unregister_method

CPU = torch.device("cpu")
NODE = {"id": "test-node", "hardware_class": "test-cpu"}


class SameWeightsOtherLogits(torch.nn.Module):
    """Wraps a model the way torch.compile does (`_orig_mod`) but computes other logits."""

    def __init__(self, inner):
        super().__init__()
        self._orig_mod = inner

    def forward(self, tokens, cache=None, **kwargs):
        logits = self._orig_mod(tokens, cache, **kwargs)
        return logits + 3.0 * torch.nn.functional.one_hot(tokens % logits.shape[-1], logits.shape[-1])


@dataclass(frozen=True)
class WrapConfig(MethodConfig):
    version: int = 1


@dataclass(frozen=True)
class JitterConfig(MethodConfig):
    version: int = 1


@pytest.fixture
def throwaway_methods():
    @register_method("test.same_weights", WrapConfig, category="test", families=("lm",), changes=("outputs",),
                     paper="test")  # fmt: skip
    class SameWeights(Method):
        def apply(self, bundle, config):
            return default_runner(bundle, SameWeightsOtherLogits(bundle.model))

    @register_method("test.jitter", JitterConfig, category="test", families=("lm",), changes=("outputs",),
                     paper="test")  # fmt: skip
    class Jitter(Method):
        def apply(self, bundle, config):
            return JitteryDecoder(bundle.model)

    yield
    unregister_method("test.same_weights")
    unregister_method("test.jitter")


class JitteryDecoder(PlainDecoder):
    """Plain decoding that sleeps 0, 50 or 100 ms in turn: with one call per repetition its ratios
    scatter far beyond the bound, whatever the machine's speed."""

    calls = 0

    def generate(self, *args, **kwargs):
        JitteryDecoder.calls += 1
        time.sleep(0.05 * (JitteryDecoder.calls % 3))
        return super().generate(*args, **kwargs)


def test_quality_goes_through_the_runners_own_model(tiny, throwaway_methods):
    wrapped = prepare(tiny, [default_config("test.same_weights")], CPU)
    records = {r["method_id"]: r for r in measure(tiny, LMWorkload(1, 16, 4), [wrapped], NODE, device=CPU)}
    base, mine = records["baseline"]["metrics"], records["test.same_weights"]["metrics"]
    assert mine["heldout_perplexity"] != pytest.approx(base["heldout_perplexity"], rel=1e-3)
    assert records["test.same_weights"]["quality_value"] == mine["heldout_perplexity"]


def _always_accept(drafts, draft_probs, target_probs, generator):
    """A broken speculative-sampling rule: every draft survives, drawn from the draft's distribution."""
    batch, width = drafts.shape
    bonus = torch.multinomial(target_probs[:, width], 1, generator=generator)
    return torch.full((batch,), width, dtype=torch.long, device=drafts.device), torch.cat((drafts, bonus), dim=1)


def test_a_broken_acceptance_rule_shows_in_the_distribution_check(tiny, monkeypatch):
    workload = LMWorkload(1, 16, 4, sampling="sample")
    baseline = prepare(tiny, [default_config("baseline")], CPU)
    session = type("Session", (), {"prompts": torch.zeros(1, 1), "reference_samples": {}})()
    drafting = [default_config("lm.parallel.jacobi")]  # guesses enter as point masses: acceptance decides
    correct = distribution_check(prepare(tiny, drafting, CPU), baseline, tiny, workload, session)
    monkeypatch.setattr(engine, "sampled_chain_accept", _always_accept)
    broken = distribution_check(prepare(tiny, drafting, CPU), baseline, tiny, workload, session)
    assert correct["sampled_tv_excess"] < 3 * correct["sampled_tv_stderr"] + 0.02
    assert broken["sampled_tv_excess"] > 4 * broken["sampled_tv_stderr"]
    assert broken["sampled_tv_distance"] > correct["sampled_tv_distance"] + 0.05


def test_a_sampled_workload_judges_a_lossless_method_by_its_distribution(tiny):
    swift = prepare(tiny, [default_config("lm.spec.swift")], CPU)
    workload = LMWorkload(1, 16, 4, sampling="sample")
    record = {r["method_id"]: r for r in measure(tiny, workload, [swift], NODE, device=CPU)}["lm.spec.swift"]
    assert record["quality_metric"] == "sampled_tv_distance"
    assert record["quality_baseline"] == record["metrics"]["sampled_tv_floor"] > 0
    assert record["metrics"]["greedy_token_match"] is None and record["metrics"]["heldout_perplexity"] > 1


def test_retrieval_at_chance_is_marked_uninformative(tiny):
    int8 = prepare(tiny, [default_config("quant.int8_dynamic")], CPU)
    workload = LongContextWorkload(prompt_len=120, gen_len=4, probes=4, ppl_windows=1)
    records = {r["method_id"]: r for r in measure(tiny, workload, [int8], NODE, device=CPU)}
    base = records["baseline"]
    assert (
        base["quality_metric"] == "retrieval_accuracy" and base["quality_baseline"] <= 0.25
    )  # lm-tiny never learnt it
    assert records["quant.int8_dynamic"]["metrics"]["quality_informative"] is False


def test_scattered_ratios_are_measured_again_and_flagged(tiny, throwaway_methods, monkeypatch):
    # One call per repetition: repeated short calls would average the sleeps out on a fast machine.
    monkeypatch.setattr(protocol, "MIN_REP_S", 0.0)
    steady = prepare(tiny, [default_config("quant.int8_dynamic")], CPU)
    jittery = prepare(tiny, [default_config("test.jitter")], CPU)
    records = {r["method_id"]: r for r in measure(tiny, LMWorkload(1, 8, 4), [steady, jittery], NODE, device=CPU)}
    noisy = records["test.jitter"]
    assert noisy["metrics"]["ratio_spread"] > NOISE_BOUND and noisy["metrics"]["noisy"] is True
    assert noisy["metrics"]["remeasured"] is True and noisy["repeats"] == 10
    assert records["baseline"]["repeats"] == 10  # the reference ran beside the repeat
    env = noisy["environment"]
    assert {"loadavg_1m", "loadavg_1m_before", "loadavg_1m_after"} <= set(env)


def test_the_spread_ignores_one_disturbed_round_but_not_a_split():
    assert ratio_spread([1.50, 1.52, 1.48, 1.51, 0.40]) < 0.05  # one round disturbed: the median holds
    # The shipped grid's int8+SWIFT on lm-8m, batch 16, t2: 4.37× from rounds split 3 against 2.
    assert ratio_spread([4.5105, 4.373, 1.5365, 1.1308, 4.6423]) > NOISE_BOUND
