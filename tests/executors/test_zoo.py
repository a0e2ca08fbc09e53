"""Zoo: deterministic training, manifests, held-out prompts, sources."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from executors.families.lm.corpus import load_corpus
from executors.families.lm.workloads import LMWorkload, heldout_prompts
from executors.zoo import build, list_zoo, load_bundle


def test_training_is_deterministic(zoo_root, tmp_path):
    build("lm-tiny", tmp_path)
    first = load_file(str(zoo_root / "zoo" / "lm-tiny" / "model.safetensors"))
    second = load_file(str(tmp_path / "zoo" / "lm-tiny" / "model.safetensors"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_manifest_records_how_the_model_was_made(zoo_root):
    manifest = json.loads((zoo_root / "zoo" / "lm-tiny" / "manifest.json").read_text())
    assert manifest["corpus_sha256"] == load_corpus().sha256
    assert manifest["recipe"]["steps"] > 0 and manifest["heldout_loss"] < 5.5  # uniform bytes: ln(259) = 5.56
    rows = {row["name"]: row for row in list_zoo(zoo_root)}
    assert rows["lm-tiny"]["built"] and not rows["lm-30m"]["built"]
    assert 25e6 < rows["lm-30m"]["params"] < 35e6 and rows["lm-8m"]["params"] > 6e6


def test_heldout_split_is_disjoint_from_training():
    corpus = load_corpus()
    assert corpus.heldout and corpus.train
    assert not set(corpus.heldout) & set(corpus.train)


def test_prompts_have_the_exact_length_and_come_from_heldout_text(tiny):
    prompts = heldout_prompts(tiny, 5, 40)
    assert prompts.shape == (5, 40)
    text = tiny.tokenizer.decode(prompts[0].tolist())
    assert any(text in chunk for chunk in tiny.heldout_texts)
    assert LMWorkload(prompt_len=250, gen_len=32).fits(tiny) is not None


def test_local_folders_load_and_unknown_sources_are_refused(zoo_root):
    bundle = load_bundle(f"local:{zoo_root / 'zoo' / 'lm-tiny'}")
    assert bundle.spec.source.startswith("local:") and bundle.spec.layers == 4
    with pytest.raises(ValueError, match="zoo:<name> or local"):
        load_bundle("http://example.com/model")
    with pytest.raises(FileNotFoundError, match="not built"):
        load_bundle("zoo:lm-30m", zoo_root, build_missing=False)
    with pytest.raises(KeyError, match="unknown zoo model"):
        build("lm-huge", zoo_root)
