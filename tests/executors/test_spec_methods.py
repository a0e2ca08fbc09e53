"""SWIFT, Medusa and Speculative Jacobi Decoding on tiny models: lossless, and doing their job."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_spec_engine import one_thread  # noqa: F401  (autouse: every test here runs one thread)

from executors.caching import cache_file
from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.model import DecoderLM, LMConfig
from executors.families.lm.tokenizers import ByteTokenizer
from executors.families.lm.workloads import calibration_windows
from executors.families.lm.zoo import lm_bundle
from executors.methods.spec.jacobi import JacobiConfig
from executors.methods.spec.medusa import (
    MedusaConfig,
    build_tree,
    distillation_set,
    head_examples,
    training_knobs,
)
from executors.methods.spec.swift import LayerSetSearch, SwiftConfig
from executors.registry import ModelBundle, config_from_json, config_to_json, get_method

CALIBRATION = tuple(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(300))
FAST_MEDUSA: dict[str, Any] = {"train_prompts": 12, "train_prompt_len": 12, "train_gen_len": 24, "train_steps": 30,
                               "train_batch": 64, "lr": 1e-2, "eval_every": 10}  # fmt: skip


def byte_lm(layers: int = 4, seed: int = 0) -> DecoderLM:
    torch.manual_seed(seed)
    config = LMConfig(vocab_size=259, dim=48, n_layers=layers, n_heads=4, n_kv_heads=2, ffn_dim=96, max_seq_len=256)
    return DecoderLM(config).eval()


def apply(method_id: str, bundle: ModelBundle, config: Any) -> Any:
    """The method's runner, typed loosely: the tests read each runner's own attributes (heads, cached, …)."""
    return get_method(method_id).apply(bundle, config)


def bundle_of(model: DecoderLM) -> ModelBundle:
    return dataclasses.replace(lm_bundle(model, ByteTokenizer(), "test:byte-lm", "test"), calibration_texts=CALIBRATION)


def without(bundle: ModelBundle, **changes) -> ModelBundle:
    """The bundle with some of what methods rely on taken away (calibration text, capabilities, …)."""
    return dataclasses.replace(bundle, **changes)


def prompts(batch: int, length: int = 12, seed: int = 5) -> torch.Tensor:
    return torch.randint(259, (batch, length), generator=torch.Generator().manual_seed(seed))


CASES = [
    ("lm.spec.swift", SwiftConfig()),
    (
        "lm.spec.swift",
        SwiftConfig(skip_ratio=0.25, max_draft_len=3, confidence_threshold=0.0, search_trials=4, search_random=2),
    ),
    ("lm.spec.medusa", MedusaConfig(**FAST_MEDUSA)),
    ("lm.spec.medusa", MedusaConfig(tree_nodes=0, heads=2, **FAST_MEDUSA)),
    ("lm.parallel.jacobi", JacobiConfig()),
    ("lm.parallel.jacobi", JacobiConfig(window=1)),
]


@pytest.mark.parametrize(("method_id", "config"), CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_output_equals_the_baseline(method_id, config, batch):
    model = byte_lm()
    runner = apply(method_id, bundle_of(model), config)
    batch_prompts = prompts(batch)
    expected = PlainDecoder(model).generate(batch_prompts, 30).tokens
    for _ in range(2):  # the second call runs on what the first one learnt (SWIFT's layer set)
        generation = runner.generate(batch_prompts, 30)
        assert generation.tokens.equal(expected)
        stats = generation.stats
        assert stats["verify_steps"] >= 1 and 0.0 <= stats["acceptance_rate"] <= 1.0
        assert stats["full_passes"] == stats["verify_steps"] + 1
        assert 30 <= stats["verify_steps"] * stats["mean_accepted_len"] + 1 <= 30 + 8


@pytest.mark.parametrize(("method_id", "config"), [CASES[0], CASES[2], CASES[4]])
def test_sampling_is_reproducible_and_follows_the_model(method_id, config):
    model = byte_lm(seed=3)
    runner = apply(method_id, bundle_of(model), config)
    prompt = prompts(1)
    first = runner.generate(prompt, 12, sampling="sample", temperature=0.7, seed=11)
    again = runner.generate(prompt, 12, sampling="sample", temperature=0.7, seed=11)
    assert first.tokens.equal(again.tokens)
    # every emitted token must be possible under the model: p(token | prefix) clearly above 0
    sequence = torch.cat((prompt, first.tokens), dim=1)
    with torch.inference_mode():
        probs = torch.softmax(model(sequence)[0, prompt.shape[1] - 1 : -1] / 0.7, dim=-1)
    assert (probs.gather(1, first.tokens[0][:, None]) > 1e-6).all()


def identity_layers(model: DecoderLM, layers: list[int]) -> DecoderLM:
    """Zeroing a block's two output projections turns it into the identity (residual only)."""
    with torch.no_grad():
        for index in layers:
            model.layers[index].attention.wo.weight.zero_()
            model.layers[index].feed_forward.w2.weight.zero_()
    return model


def test_swift_search_finds_the_layers_that_do_nothing():
    model = identity_layers(byte_lm(layers=8, seed=1), [2, 5])
    config = SwiftConfig(
        skip_ratio=0.25, max_draft_len=4, confidence_threshold=0.0, search_trials=15, search_random=5, trials_per_step=3
    )
    runner = apply("lm.spec.swift", bundle_of(model), config)
    batch_prompts = prompts(2, length=40)
    expected = PlainDecoder(model).generate(batch_prompts, 40).tokens
    runner.generate(batch_prompts, 40)  # the optimisation phase of this stream
    generation = runner.generate(batch_prompts, 40)
    assert generation.tokens.equal(expected)
    assert generation.stats["skip_layers"] == [2, 5]
    assert generation.stats["search_trials"] == 0  # budget spent: the acceleration phase
    assert generation.stats["acceptance_rate"] > 0.95  # a draft identical to the model
    assert generation.stats["mean_accepted_len"] > 4.0


def test_swift_confidence_threshold_stops_drafting_early():
    model = byte_lm()
    always_stop = SwiftConfig(max_draft_len=5, confidence_threshold=1.01, search_trials=2)
    generation = apply("lm.spec.swift", bundle_of(model), always_stop).generate(prompts(1), 20)
    assert generation.stats["drafted"] == generation.stats["verify_steps"]  # one draft per step


def test_layer_set_search_explores_distinct_sets_of_the_right_size():
    search = LayerSetSearch(n_layers=10, count=3, random_trials=3)
    for trial in range(8):
        candidate = search.propose()
        assert len(candidate) == 3 and candidate <= set(range(1, 10)) and candidate not in search.tried
        search.record(candidate, score=float(len(candidate & {1, 2, 3})) + trial * 1e-3)
    assert search.best == max(zip(search.scores, search.tried, strict=False), key=lambda pair: pair[0])[1]


def test_medusa_tree_is_ancestor_closed_and_prefers_likely_paths():
    accuracy = [[0.6, 0.2, 0.1], [0.5, 0.3, 0.1], [0.4, 0.2, 0.1]]
    tree, depths, ranks = build_tree(accuracy, nodes=6)
    assert tree.size == 7 and max(depths) <= 3
    assert list(zip(depths, ranks, strict=False))[1:4] == [(1, 0), (2, 0), (1, 1)]  # 0.6, 0.3, 0.2 first
    for node in range(1, tree.size):
        assert tree.parents[node] < node and depths[node] == depths[tree.parents[node]] + 1


def test_medusa_heads_learn_and_are_cached():
    model = byte_lm(seed=2)
    config = MedusaConfig(**FAST_MEDUSA)
    untrained = MedusaConfig(**{**FAST_MEDUSA, "train_steps": 0})
    baseline = apply("lm.spec.medusa", bundle_of(model), untrained)
    trained = apply("lm.spec.medusa", bundle_of(model), config)
    assert not trained.cached and trained.setup_s > 0
    assert cache_file("medusa", model, training_knobs(config)).exists()
    curve = trained.training["curve"]
    assert [point["step"] for point in curve] == [10, 20, 30] and len(curve[0]["top1"]) == config.heads
    # self-distillation must beat the starting point (each head a copy of the next-token head),
    # scored on the model's continuations of prompts the heads were not trained on
    other = dataclasses.replace(bundle_of(model), calibration_texts=CALIBRATION[150:])
    hidden, targets, _ = distillation_set(other, config)
    for k in range(config.heads):
        inputs, labels = head_examples(hidden, targets, k)
        with torch.no_grad():
            before = F.cross_entropy(baseline.heads.head(inputs, k), labels)
            after = F.cross_entropy(trained.heads.head(inputs, k), labels)
        assert after < before - 0.1
    again = apply("lm.spec.medusa", bundle_of(model), config)
    assert again.cached and again.setup_s == 0.0 and again.accuracy == trained.accuracy
    assert again.training["curve"] == curve and again.training["build_s"] == trained.training["build_s"]
    for name, tensor in trained.heads.state_dict().items():
        assert again.heads.state_dict()[name].equal(tensor)

    # inference-only knobs share the cached heads; training knobs do not
    def key(knobs: MedusaConfig):
        return cache_file("medusa", model, training_knobs(knobs))

    assert key(MedusaConfig(**FAST_MEDUSA, tree_nodes=3)) == key(config)
    assert key(MedusaConfig(**{**FAST_MEDUSA, "lr": 3e-2})) != key(config)
    assert key(MedusaConfig(**{**FAST_MEDUSA, "distill_from": "text"})) != key(config)


def test_medusa_distils_the_models_own_continuations_not_the_corpus():
    """The defect SmolLM2 showed (head acceptance 0.03-0.07): heads trained on teacher-forced corpus
    text learn the corpus's next tokens, which the model itself would not produce. Self-distillation
    (the paper's) continues calibration prompts greedily and trains head k at t on the token the
    model generated at t+2+k — exactly what greedy verification accepts."""
    model = byte_lm(seed=4)
    bundle = bundle_of(model)
    config = MedusaConfig(**FAST_MEDUSA)
    hidden, targets, seconds = distillation_set(bundle, config)
    prompts = calibration_windows(bundle, config.train_prompts, config.train_prompt_len)
    continuation = PlainDecoder(model).generate(prompts, config.train_gen_len).tokens
    assert hidden.shape[:2] == targets.shape == (len(prompts), config.train_gen_len + 1) and seconds > 0
    # position 0 is the last prompt token: its argmax is the first generated token, and so on
    torch.testing.assert_close(targets[:, :-1], continuation)
    with torch.no_grad():  # the states a teacher-forced (verify) forward computes at the same positions
        _, teacher_forced = model(torch.cat((prompts, continuation), 1), return_hidden=True)
    torch.testing.assert_close(hidden, teacher_forced[:, config.train_prompt_len - 1 :], rtol=1e-4, atol=1e-4)
    for k in range(config.heads):
        _, labels = head_examples(hidden, targets, k)
        assert torch.equal(labels.view(len(prompts), -1)[:, :-1], continuation[:, 1 + k :])
    held_out = set(bundle.heldout_texts)
    assert not held_out & set(bundle.calibration_texts[: config.train_prompts])


def test_supports_gives_reasons():
    one_layer = bundle_of(byte_lm(layers=1))
    assert "2 layers" in get_method("lm.spec.swift").supports(one_layer, torch.device("cpu"))
    no_text = without(bundle_of(byte_lm()), calibration_texts=())
    assert "calibration" in get_method("lm.spec.medusa").supports(no_text, torch.device("cpu"))
    not_ours = without(bundle_of(byte_lm()), model=torch.nn.Linear(2, 2), capabilities=frozenset())
    for method_id in ("lm.spec.swift", "lm.spec.medusa", "lm.parallel.jacobi"):
        assert "KV cache" in get_method(method_id).supports(not_ours, torch.device("cpu"))
        assert get_method(method_id).supports(bundle_of(byte_lm()), torch.device("cpu")) is None


def test_configs_round_trip_and_reject_bad_values():
    for _, config in CASES:
        assert config_from_json(config_to_json(config)) == config
    with pytest.raises(ValueError, match="unknown params"):
        config_from_json({"method": "lm.spec.swift", "version": 1, "params": {"draft": 3}})
    with pytest.raises(ValueError):
        apply("lm.parallel.jacobi", bundle_of(byte_lm()), JacobiConfig(window=0))
    with pytest.raises(ValueError):
        apply("lm.spec.swift", bundle_of(byte_lm()), SwiftConfig(skip_ratio=1.0))
