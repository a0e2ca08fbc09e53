"""Parallel prompt decoding: lossless, trained prompt tokens, the dynamic sparse tree, the probe."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_spec_engine import one_thread  # noqa: F401  (autouse: every test here runs one thread)
from test_spec_methods import bundle_of, byte_lm, prompts, without

from executors.caching import cache_file
from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.tokenizers import ByteTokenizer
from executors.methods.spec import parallel_prompt as ppd
from executors.methods.spec.parallel_prompt import ParallelPromptConfig
from executors.registry import (
    apply_composite,
    config_from_json,
    config_to_json,
    default_config,
    get_method,
)

FAST = ParallelPromptConfig(train_windows=8, train_seq_len=48, train_steps=30, insertions=6, train_batch=2, lr=3e-2)
ACCURACY = [[0.7, 0.1, 0.05], [0.5, 0.15, 0.05], [0.4, 0.1, 0.05]]


def apply(model, **knobs):
    return get_method("lm.spec.parallel_prompt").apply(bundle_of(model), dataclasses.replace(FAST, **knobs))


@pytest.mark.parametrize("knobs", [{"tree_budget": 16}, {"tree_budget": 9, "ensemble": 2, "prompt_tokens": 2}])
@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_output_equals_the_baseline(knobs, batch):
    model = byte_lm()
    runner = apply(model, **knobs)
    batch_prompts = prompts(batch)
    generation = runner.generate(batch_prompts, 30)
    assert generation.tokens.equal(PlainDecoder(model).generate(batch_prompts, 30).tokens)
    stats = generation.stats
    assert stats["full_passes"] == stats["verify_steps"] + 1 and 0.0 <= stats["acceptance_rate"] <= 1.0
    assert 30 <= round(stats["verify_steps"] * stats["mean_accepted_len"]) + 1 <= 30 + knobs["tree_budget"]
    assert stats["tree_budget"] == knobs["tree_budget"] and max(stats["tree_sizes"]) <= knobs["tree_budget"]
    assert len(stats["tree_sizes"]) == runner.config.prompt_tokens + 1  # one tree per number of guesses


def test_composes_with_weight_transforms():
    """int4 weights: exact. Dynamic int8: training backpropagates through a float twin (int8
    layers have no backward), and exactness is out of reach by construction — activations are
    quantized per forward, so a verify forward's other inputs move the scales of every token."""
    model = byte_lm(seed=4)
    batch_prompts = prompts(2)
    for weights, exact in (("quant.weight_only_int4", True), ("quant.int8_dynamic", False)):
        configs = (default_config(weights), dataclasses.replace(FAST, tree_budget=12))
        runner = apply_composite(bundle_of(model), configs)
        assert isinstance(runner, ppd.ParallelPromptRunner)
        assert runner.setup_s > 0
        expected = PlainDecoder(runner.model).generate(batch_prompts, 24).tokens
        tokens = runner.generate(batch_prompts, 24).tokens
        if exact:
            assert tokens.equal(expected)
        else:
            assert (tokens == expected).float().mean() > 0.7


def test_sampling_is_reproducible_and_follows_the_model():
    model = byte_lm(seed=3)
    runner = apply(model, tree_budget=8)
    prompt = prompts(2)
    first = runner.generate(prompt, 12, sampling="sample", temperature=0.7, seed=11)
    assert first.tokens.equal(runner.generate(prompt, 12, sampling="sample", temperature=0.7, seed=11).tokens)
    assert first.stats["accepted"] > 0  # the untrained-ish guesses still get drafts through
    sequence = torch.cat((prompt, first.tokens), dim=1)
    with torch.inference_mode():
        probs = torch.softmax(model(sequence)[:, prompt.shape[1] - 1 : -1] / 0.7, dim=-1)
    assert (probs.gather(2, first.tokens[..., None]) > 1e-6).all()


def test_one_forward_with_many_insertions_equals_separate_forwards():
    """Each prompt group must see exactly the window up to its insertion point and its own stream."""
    model = byte_lm(seed=1)
    tokens = prompts(2, length=20)
    prompt_tokens = ppd.PromptTokens(3, 2, model.config.dim)
    torch.nn.init.normal_(prompt_tokens.weight, std=0.3)
    points = [4, 11, 16]
    with torch.no_grad():
        student, teacher = ppd.prompt_and_teacher_logits(model, prompt_tokens, tokens, points)
        torch.testing.assert_close(teacher, model(tokens)[:, torch.tensor(points)[:, None] + 1 + torch.arange(3)])
        for g, point in enumerate(points):
            for stream in range(2):  # alone: the prefix, then this stream's prompt tokens in order
                fed = torch.cat(
                    (
                        model.tok_embeddings(tokens[:, : point + 1]),
                        prompt_tokens.weight[:, stream][None].expand(2, -1, -1),
                    ),
                    dim=1,
                )
                alone = model(torch.zeros(2, point + 4, dtype=torch.long), embeddings=fed)[:, point + 1 :]
                if stream == 0:
                    mean = alone / 2
                else:
                    mean = mean + alone / 2
            torch.testing.assert_close(student[:, g], mean, atol=1e-4, rtol=1e-4)


def test_prompt_tokens_learn_and_are_cached():
    """Distillation must beat the starting embeddings on windows it did not train on. A random
    model with large embeddings has peaked, context-dependent outputs worth learning (the
    tiny zoo LM's barely depend on context)."""
    model = byte_lm(seed=2)
    with torch.no_grad():
        model.tok_embeddings.weight.mul_(10.0)
    config = FAST
    every = ppd.token_windows(ByteTokenizer(), bundle_of(model).calibration_texts, 48, 8)
    untrained = ppd.train_prompts(model, every[:6], dataclasses.replace(FAST, train_steps=0))
    windows = every[6:]  # apply trains on the first 6 of the same 8 windows
    trained = get_method("lm.spec.parallel_prompt").apply(bundle_of(model), config)
    assert isinstance(trained, ppd.ParallelPromptRunner)
    assert not trained.cached and trained.setup_s > 0
    assert cache_file("parallel_prompt", model, ppd.training_knobs(config)).exists()

    def held_out(prompt_tokens):
        with torch.no_grad():
            student, teacher = ppd.prompt_and_teacher_logits(model, prompt_tokens, windows, [5, 20, 33])
            kl = (
                torch.nn.functional.kl_div(
                    student.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="none"
                )
                .sum(-1)
                .mean()
                .item()
            )
            return kl, (student.argmax(-1) == teacher.argmax(-1)).float().mean().item()

    assert held_out(trained.prompts)[0] < 0.9 * held_out(untrained)[0]
    assert held_out(trained.prompts)[1] > held_out(untrained)[1] + 0.05
    again = get_method("lm.spec.parallel_prompt").apply(bundle_of(model), config)
    assert isinstance(again, ppd.ParallelPromptRunner)
    assert again.cached and again.accuracy == trained.accuracy
    assert again.prompts.weight.equal(trained.prompts.weight)

    # tree knobs reuse the cached tokens; training knobs do not
    def key(knobs: ParallelPromptConfig):
        return cache_file("parallel_prompt", model, ppd.training_knobs(knobs))

    assert key(dataclasses.replace(FAST, tree_budget=5, top_k=2)) == key(config)
    assert key(dataclasses.replace(FAST, ensemble=2)) != key(config)


def test_tree_plans_fit_the_budget_and_chain_prompt_tokens_per_stream():
    plans, tokens = ppd.design_trees(ACCURACY, budget=16, ensemble=2)
    assert len(plans) == 4 and plans[0].candidates == 0
    for guesses, plan in enumerate(plans):
        assert plan.tree.size <= 16 and abs(sum(plan.transitions) - 1.0) < 1e-6
        assert max(plan.depths) <= guesses
        for node in range(plan.candidates + 1):
            for stream in range(2):
                chain = [int(n) for n in plan.prompt_nodes[node, :, stream] if n >= 0]
                assert len(chain) == plan.prompt_counts[node]
                assert [plan.tree.parents[n] for n in chain] == [node, *chain][: len(chain)]
                assert [plan.prompt_slots[n - plan.candidates - 1] for n in chain] == [
                    (i, stream) for i in range(len(chain))
                ]
    assert plans[0].prompt_counts[0] >= 1  # the pending token always carries guesses forward
    assert 1.0 < tokens <= 1.0 + 3
    sizes = [ppd.design_trees(ACCURACY, budget, 1)[1] for budget in (4, 8, 16, 32)]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # more room never hurts the expectation


def test_budget_follows_the_measured_verify_cost(monkeypatch):
    model = byte_lm()
    config = ParallelPromptConfig(max_tree_budget=32)
    monkeypatch.setattr(ppd, "verify_cost", lambda model, sizes: dict.fromkeys(sizes, 1.0))
    assert ppd.choose_budget(model, ACCURACY, config)[0] == 32  # free width: the biggest tree
    monkeypatch.setattr(ppd, "verify_cost", lambda model, sizes: {s: float(s) for s in sizes})
    assert ppd.choose_budget(model, ACCURACY, config)[0] == 3  # width costs linearly: the smallest
    cost = ppd.verify_cost(model, [3, 8])
    assert set(cost) == {3, 8} and all(value > 0 for value in cost.values())


def test_supports_gives_reasons_and_config_round_trips():
    method = get_method("lm.spec.parallel_prompt")
    no_text = without(bundle_of(byte_lm()), calibration_texts=())
    assert "calibration" in method.supports(no_text, torch.device("cpu"))
    not_ours = without(bundle_of(byte_lm()), model=torch.nn.Linear(2, 2), capabilities=frozenset())
    assert "KV cache" in method.supports(not_ours, torch.device("cpu"))
    config = ParallelPromptConfig(ensemble=2, tree_budget=12)
    assert config_from_json(config_to_json(config)) == config
    with pytest.raises(ValueError):
        method.apply(bundle_of(byte_lm()), ParallelPromptConfig(prompt_tokens=0))
