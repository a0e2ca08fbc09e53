"""One suite over every registered method, on the tiny fixture of every family it accelerates.

A method must change what it claims to change (weights, bytes, parameters, outputs, forward
passes, schedule, graph) against its family's reference on the same model — the canary below
shows that a method returning the reference unchanged fails these checks — and a lossless one
must reproduce the reference's greedy tokens exactly.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conformance import Case, apply_case, cases, claim_failures, fixture

from executors.families import default_runner, kinds
from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.workloads import heldout_prompts, heldout_windows, perplexity
from executors.registry import (
    Method,
    MethodConfig,
    config_from_json,
    config_to_json,
    default_config,
    field_limits,
    get_method,
    method_ids,
    register_method,
    unregister_method,
)

# Compilation and Medusa's head training take tens of seconds on 2 cores; they still run.
SLOW = {"sys.compile", "lm.spec.medusa"}
ALL = [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in method_ids()]
CASES = [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.method_id in SLOW else []) for c in cases(method_ids())]
N_PROMPTS, PROMPT_LEN, GEN_LEN = 50, 24, 12
METHODS_DOC = Path(__file__).resolve().parents[2] / "docs" / "methods.md"


@pytest.fixture(scope="module")
def fixtures(zoo_root):
    cache: dict = {}
    return lambda family, method_id=None: fixture(family, zoo_root, cache, method_id)


@pytest.fixture(scope="module")
def applied(fixtures):
    """Each case applied once: torch.compile's first calls compile, which is the slow part."""
    cache = {}

    def runners_for(case: Case):
        if case not in cache:
            cache[case] = apply_case(case, fixtures(case.family, case.method_id))
        return cache[case]

    return runners_for


@pytest.fixture(scope="module")
def prompts(tiny):
    return heldout_prompts(tiny, N_PROMPTS, PROMPT_LEN)


@pytest.fixture(scope="module")
def baseline_tokens(tiny, prompts):
    return PlainDecoder(tiny.model).generate(prompts, GEN_LEN).tokens


def test_every_catalogued_method_is_registered():
    """Every method docs/methods.md marks implemented is in the registry, and every registered one is there."""
    rows = [line for line in METHODS_DOC.read_text().splitlines() if line.startswith("| `")]
    documented = {re.match(r"\| `([^`]+)`", row).group(1): row for row in rows}
    implemented = {mid for mid, row in documented.items() if "implemented" in row.rsplit("|", 2)[-2]}
    assert implemented, "docs/methods.md lists no implemented method"
    assert implemented <= set(method_ids()), f"documented but not registered: {sorted(implemented - set(method_ids()))}"
    assert set(method_ids()) <= set(documented), (
        f"registered but not documented: {sorted(set(method_ids()) - set(documented))}"
    )


def test_every_method_claims_an_effect_unless_it_is_a_reference():
    references = {kind.reference for kind in kinds()}
    for method_id in method_ids():
        method = get_method(method_id)
        assert method.families, f"{method_id} names no family"
        assert method.changes or method_id in references, f"{method_id} claims to change nothing"


@pytest.mark.parametrize("case", CASES)
def test_a_method_changes_what_it_claims_against_its_family_reference(case, applied, fixtures):
    runner, reference = applied(case)
    failures = claim_failures(get_method(case.method_id), case.family, runner, reference,
                              fixtures(case.family, case.method_id))  # fmt: skip
    assert not failures, f"{case.id}: {failures}"


@pytest.mark.parametrize("case", CASES)
def test_supports_applies_on_cpu_and_gives_a_reason_on_cuda(case, fixtures):
    method = get_method(case.method_id)
    bundle = fixtures(case.family, case.method_id)
    assert method.supports(bundle, torch.device("cpu")) is None, "every method should apply on CPU"
    answer = method.supports(bundle, torch.device("cuda"))
    assert answer is None or (isinstance(answer, str) and answer.strip())


@dataclass(frozen=True)
class NoopConfig(MethodConfig):
    version: int = 1


@pytest.fixture
def noop():
    """A canary: it claims weights and outputs (and, as a decoder, forward passes) but returns the reference."""

    @register_method("test.noop", NoopConfig, category="test", families=("lm", "encoder"),
                     changes=("weights", "outputs", "forward_passes"), paper="does nothing")  # fmt: skip
    class Noop(Method):
        def apply(self, bundle, config):
            return default_runner(bundle, bundle.model)

    yield get_method("test.noop")
    unregister_method("test.noop")


@pytest.mark.parametrize("family", ["lm", "encoder"])
def test_the_suite_rejects_a_method_that_returns_the_reference_unchanged(noop, family, fixtures):
    bundle = fixtures(family)
    failures = claim_failures(noop, family, noop.apply(bundle, NoopConfig()), apply_case(Case("baseline", family),
                              bundle)[0], bundle)  # fmt: skip
    claimed = {f.split(":")[0] for f in failures}
    assert {"weights", "outputs"} <= claimed, failures
    assert "forward_passes" in claimed  # the same as the reference's, or (encoder) not observable at all


def test_a_lossless_claim_on_changed_tokens_is_rejected(tiny, applied):
    int8, baseline = applied(Case("quant.int8_dynamic", "lm"))
    fake = type("FakeLossless", (Method,), {"changes": frozenset({"weights"}), "lossless": True})()
    noisy = PlainDecoder(_perturbed(int8.model))
    assert any("lossless" in f for f in claim_failures(fake, "lm", noisy, baseline, tiny))


def _perturbed(model):
    """int8's model with its logits pushed off the argmax: greedy tokens must change."""

    class Shifted(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def new_cache(self, *args, **kwargs):
            return self.inner.new_cache(*args, **kwargs)

        def forward(self, tokens, cache=None, **kwargs):
            logits = self.inner(tokens, cache, **kwargs)
            return logits + torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)) * 10

    return Shifted(model)


@pytest.mark.parametrize("method_id", ALL)
def test_config_round_trips_through_json(method_id):
    config = default_config(method_id)
    data = config_to_json(config)
    assert data["method"] == method_id and data["version"] == config.version
    assert config_from_json(data) == config
    changed: dict[str, int] = {}  # bools are ints
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name != "version" and isinstance(value, bool):
            changed[field.name] = not value
        elif field.name != "version" and isinstance(value, int):
            high = field_limits(field).get("max")
            changed[field.name] = value - 1 if high is not None and value + 1 > high else value + 1
    if changed:
        rebuilt = config_from_json({**data, "params": changed})
        assert all(getattr(rebuilt, k) == v for k, v in changed.items())
    with pytest.raises(ValueError, match="unknown params"):
        config_from_json({**data, "params": {"no_such_knob": 1}})
    with pytest.raises(ValueError, match="version"):
        config_from_json({**data, "version": config.version + 1})


LM_CASES = [p for p in CASES if p.values[0].family == "lm"]


@pytest.mark.parametrize("case", LM_CASES)
def test_lm_methods_generate_and_keep_quality_on_held_out_text(case, tiny, prompts, baseline_tokens, applied):
    method, (runner, _) = get_method(case.method_id), applied(case)
    generation = runner.generate(prompts, GEN_LEN)
    assert generation.tokens.shape == (N_PROMPTS, GEN_LEN)
    assert generation.tokens.dtype == torch.long and generation.forward_passes >= 1
    if method.lossless:
        mismatched = (generation.tokens != baseline_tokens).any(dim=1).nonzero().flatten().tolist()
        assert not mismatched, f"{case.method_id} differs from greedy baseline on prompts {mismatched}"
    else:
        windows = heldout_windows(tiny, 4, 129)
        assert perplexity(runner.model, windows) == pytest.approx(perplexity(tiny.model, windows), rel=0.1)
        agreement = (generation.tokens == baseline_tokens).float().mean().item()
        assert agreement > 0.5, f"{case.method_id} agrees with the baseline on only {agreement:.0%} of tokens"


@pytest.mark.parametrize("case", LM_CASES)
def test_sampling_is_reproducible_with_a_seed(case, prompts, applied):
    runner = applied(case)[0]
    first = runner.generate(prompts[:4], 6, sampling="sample", seed=7).tokens
    again = runner.generate(prompts[:4], 6, sampling="sample", seed=7).tokens
    assert torch.equal(first, again)
