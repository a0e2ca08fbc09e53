"""Long-context workload: passkey data, probes, the workload contract, the long fine-tune."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from executors.cli import parse_workloads
from executors.families import workload_from_json, zoo_entries
from executors.families.lm.corpus import load_corpus
from executors.families.lm.tokenizers import ByteTokenizer
from executors.families.lm.workloads import LMWorkload
from executors.families.longctx.finetune import LONG_RECIPES, LongRecipe, finetune_long
from executors.families.longctx.harness import retrieval_quality
from executors.families.longctx.workload import (
    PASSKEY_CLASSES,
    PASSKEY_LEN,
    QUERY_BYTE,
    LongContextWorkload,
    retrieval_accuracy,
    retrieval_probes,
    timed_prompts,
    token_stream,
    training_example,
)
from executors.protocol import prepare
from executors.registry import default_config

RESERVED = {QUERY_BYTE, *(b for byte_class in PASSKEY_CLASSES for b in byte_class)}


def test_reserved_bytes_never_occur_in_the_corpus():
    corpus = load_corpus()
    stream = token_stream(corpus.train + corpus.heldout, ByteTokenizer())
    assert not RESERVED & set(stream)
    assert len(RESERVED) == 1 + PASSKEY_LEN * len(PASSKEY_CLASSES[0])


def test_training_examples_weight_exactly_the_answers_a_query_must_read_back():
    stream = token_stream(load_corpus().train[:5], ByteTokenizer())
    tokens, weights = training_example(stream, 300, random.Random(3), answer_weight=4.0, queries=2)
    assert len(tokens) == len(weights) == 300
    starts = [i for i, t in enumerate(tokens) if t == QUERY_BYTE]
    key_at = next(i for i, t in enumerate(tokens) if t in PASSKEY_CLASSES[0])
    key = tokens[key_at : key_at + PASSKEY_LEN]
    assert len(starts) == 2 and key_at < starts[0]
    assert all(tokens[s + 1 : s + 1 + PASSKEY_LEN] == key for s in starts)
    answers = {s + 1 + i for s in starts for i in range(PASSKEY_LEN)}
    assert {i for i, w in enumerate(weights) if w == 4.0} == answers
    assert all(w == 1.0 for i, w in enumerate(weights) if i not in answers)


def test_probes_are_exact_length_deterministic_and_hold_their_answer_once(tiny):
    probes = retrieval_probes(tiny, 6, 200)
    assert probes == retrieval_probes(tiny, 6, 200) and probes != retrieval_probes(tiny, 6, 200, seed=1)
    for probe in probes:
        assert len(probe.prompt) == 200 and probe.prompt[-1] == QUERY_BYTE
        at = probe.prompt.index(probe.answer[0])
        assert probe.prompt[at : at + PASSKEY_LEN] == probe.answer and 0 <= probe.depth < 1
        assert sum(t in RESERVED for t in probe.prompt) == PASSKEY_LEN + 1
    heldout = set(token_stream(tiny.heldout_texts, tiny.tokenizer))
    assert set(probes[0].prompt) - RESERVED <= heldout


def test_retrieval_accuracy_scores_the_passkey_where_it_comes_next():
    probes = retrieval_probes_for_stub()

    class KnowsTheFirstProbe(torch.nn.Module):  # right on probe 0, right on byte 1 only of probe 1
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, tokens):
            logits = torch.zeros(*tokens.shape, 259)
            for row, probe in enumerate(probes[tokens_offset(tokens) :][: len(tokens)]):
                known = probe.answer if probe is probes[0] else probe.answer[:1] if probe is probes[1] else []
                for i, byte in enumerate(known):
                    logits[row, -len(probe.answer) + i, byte] = 1.0
            return logits

    def tokens_offset(tokens):
        return next(i for i, p in enumerate(probes) if tokens[0, : len(p.prompt)].tolist() == p.prompt)

    scores = retrieval_accuracy(KnowsTheFirstProbe(), probes, batch_size=2)
    assert scores["retrieval_accuracy"] == pytest.approx(2 / 3) and scores["retrieval_probes"] == 3
    assert scores["passkey_exact_match"] == pytest.approx(1 / 3)
    assert scores["passkey_byte_accuracy"] == pytest.approx((4 + 1) / 12)


def retrieval_probes_for_stub():
    bundle = type("B", (), {"heldout_texts": load_corpus().heldout[:3], "tokenizer": ByteTokenizer()})()
    return retrieval_probes(bundle, 3, 64)


def test_workload_contract(tiny):
    workload = LongContextWorkload(prompt_len=200, gen_len=8, probes=2)
    assert workload.row()["kind"] == "lm-longctx" and workload.id != LMWorkload(prompt_len=200, gen_len=8).id
    assert workload_from_json(workload.shape()) == workload
    assert workload.fits(tiny) is None and "exceeds" in LongContextWorkload(prompt_len=4096).fits(tiny)
    assert timed_prompts(tiny, workload).shape == (1, 200)
    with pytest.raises(ValueError):
        LongContextWorkload(probes=0)
    parsed = parse_workloads("longctx context=1024,2048 batch=1 gen=16")
    assert [w.prompt_len for w in parsed] == [1024, 2048] and all(isinstance(w, LongContextWorkload) for w in parsed)
    assert parse_workloads('{"kind": "lm-longctx", "prompt_len": 512}') == [LongContextWorkload(prompt_len=512)]


def test_quality_reports_accuracy_and_long_perplexity(tiny):
    baseline = prepare(tiny, [default_config("baseline")], torch.device("cpu"))
    quality = retrieval_quality(baseline, tiny, LongContextWorkload(prompt_len=120, probes=2, ppl_windows=1))
    assert 0 <= quality["retrieval_accuracy"] <= 1 and quality["retrieval_probes"] == 2
    assert 1 < quality["longctx_perplexity"] < 259


def tiny_weights(zoo_root):
    from safetensors.torch import load_file

    return load_file(str(zoo_root / "zoo" / "lm-tiny" / "model.safetensors"))


def test_long_finetune_is_deterministic_and_extends_the_context(zoo_root):
    recipe = LongRecipe("lm-tiny", 512, ((64, 2, 2), (160, 1, 1)), 1e-3, checks=(160,), check_probes=2)
    first, manifest = finetune_long("tiny-long", zoo_root, recipe)
    second, _ = finetune_long("tiny-long", zoo_root, recipe)
    assert first.config.max_seq_len == 512 and manifest["base"] == "zoo:lm-tiny"
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=False)
    )
    trained = first.state_dict()
    assert not all(torch.equal(trained[k], v) for k, v in tiny_weights(zoo_root).items())
    assert set(manifest["retrieval_accuracy_at"]) == {"160"} and manifest["train_seconds"] >= 0
    assert set(LONG_RECIPES) == {e.name for e in zoo_entries() if e.family == "longctx"}
    assert dataclasses.asdict(recipe)["stages"][0] == (64, 2, 2)
