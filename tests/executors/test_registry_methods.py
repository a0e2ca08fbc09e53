"""One suite over every registered method: B's speculative methods are covered automatically."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.workloads import heldout_prompts, heldout_windows, perplexity
from executors.registry import config_from_json, config_to_json, default_config, get_method, method_ids

# Compilation and Medusa's head training take tens of seconds on 2 cores; they still run.
SLOW = {"sys.compile", "lm.spec.medusa"}
ALL = [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in method_ids()]
N_PROMPTS, PROMPT_LEN, GEN_LEN = 50, 24, 12


@pytest.fixture(scope="module")
def prompts(tiny):
    return heldout_prompts(tiny, N_PROMPTS, PROMPT_LEN)


@pytest.fixture(scope="module")
def runners(tiny):
    """Applied once per method: torch.compile's first calls compile, which is the slow part."""
    cache = {}

    def runner_for(method_id):
        if method_id not in cache:
            cache[method_id] = get_method(method_id).apply(tiny, default_config(method_id))
        return cache[method_id]

    return runner_for


@pytest.fixture(scope="module")
def baseline_tokens(tiny, prompts):
    return PlainDecoder(tiny.model).generate(prompts, GEN_LEN).tokens


def test_every_catalogued_method_is_registered():
    assert {"baseline", "sys.compile", "quant.int8_dynamic", "quant.weight_only_int4"} <= set(method_ids())


@pytest.mark.parametrize("method_id", ALL)
def test_config_round_trips_through_json(method_id):
    config = default_config(method_id)
    data = config_to_json(config)
    assert data["method"] == method_id and data["version"] == config.version
    assert config_from_json(data) == config
    changed = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name != "version" and isinstance(value, bool):
            changed[field.name] = not value
        elif field.name != "version" and isinstance(value, int):
            changed[field.name] = value + 1
    if changed:
        rebuilt = config_from_json({**data, "params": changed})
        assert all(getattr(rebuilt, k) == v for k, v in changed.items())
    with pytest.raises(ValueError, match="unknown params"):
        config_from_json({**data, "params": {"no_such_knob": 1}})
    with pytest.raises(ValueError, match="version"):
        config_from_json({**data, "version": config.version + 1})


@pytest.mark.parametrize("method_id", ALL)
def test_supports_answers_none_or_a_reason(method_id, tiny):
    method = get_method(method_id)
    assert method.supports(tiny, torch.device("cpu")) is None, "every method should apply on CPU"
    answer = method.supports(tiny, torch.device("cuda"))
    assert answer is None or (isinstance(answer, str) and answer.strip())


@pytest.mark.parametrize("method_id", ALL)
def test_apply_runs_on_the_tiny_model(method_id, tiny, prompts, baseline_tokens, runners):
    method = get_method(method_id)
    runner = runners(method_id)
    generation = runner.generate(prompts, GEN_LEN)
    assert generation.tokens.shape == (N_PROMPTS, GEN_LEN)
    assert generation.tokens.dtype == torch.long and generation.forward_passes >= 1
    if method.lossless:
        mismatched = (generation.tokens != baseline_tokens).any(dim=1).nonzero().flatten().tolist()
        assert not mismatched, f"{method_id} differs from greedy baseline on prompts {mismatched}"
    else:
        windows = heldout_windows(tiny, 4, 129)
        base_ppl = perplexity(tiny.model, windows)
        model = getattr(runner.model, "_orig_mod", runner.model)
        assert perplexity(model, windows) == pytest.approx(base_ppl, rel=0.1)
        agreement = (generation.tokens == baseline_tokens).float().mean().item()
        assert agreement > 0.5, f"{method_id} agrees with the baseline on only {agreement:.0%} of tokens"


@pytest.mark.parametrize("method_id", ALL)
def test_sampling_is_reproducible_with_a_seed(method_id, prompts, runners):
    runner = runners(method_id)
    first = runner.generate(prompts[:4], 6, sampling="sample", seed=7).tokens
    again = runner.generate(prompts[:4], 6, sampling="sample", seed=7).tokens
    assert torch.equal(first, again)
