"""DecoderLM: cached decoding equals a full forward; loading an HF Llama folder matches transformers."""

from __future__ import annotations

import json

import pytest
import torch

from executors.families.lm.checkpoints import load_lm, save_lm
from executors.families.lm.hf_decoders import load_hf_decoder
from executors.families.lm.model import DecoderLM, LMConfig

CONFIG = LMConfig(vocab_size=97, dim=48, n_layers=3, n_heads=6, n_kv_heads=2, ffn_dim=96, max_seq_len=64)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DecoderLM(CONFIG).eval()


def test_incremental_decoding_matches_one_full_forward(model):
    tokens = torch.randint(0, CONFIG.vocab_size, (3, 20))
    full = model(tokens)
    cache = model.new_cache(3, 32)
    pieces = [model(tokens[:, a:b], cache) for a, b in ((0, 9), (9, 10), (10, 16), (16, 20))]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=1e-4)


def test_crop_rolls_back_and_clone_is_independent(model):
    tokens = torch.randint(0, CONFIG.vocab_size, (2, 12))
    cache = model.new_cache(2, 16)
    model(tokens[:, :8], cache)
    snapshot = cache.clone()
    first = model(tokens[:, 8:], cache)
    cache.crop(8)
    again = model(tokens[:, 8:], cache)
    torch.testing.assert_close(first, again)
    assert snapshot.length == 8 and cache.length == 12
    with pytest.raises(ValueError):
        cache.crop(13)


def test_a_chain_tree_mask_is_the_causal_mask(model):
    tokens = torch.randint(0, CONFIG.vocab_size, (1, 10))
    cache = model.new_cache(1, 16)
    model(tokens[:, :6], cache)
    causal = model(tokens[:, 6:], cache)
    cache.crop(6)
    chained = model(tokens[:, 6:], cache, tree_mask=torch.ones(4, 4, dtype=torch.bool).tril())
    torch.testing.assert_close(causal, chained)


def test_skipped_layers_change_the_output_and_hidden_is_returned(model):
    tokens = torch.randint(0, CONFIG.vocab_size, (1, 5))
    logits, hidden = model(tokens, return_hidden=True)
    assert hidden.shape == (1, 5, CONFIG.dim)
    assert not torch.allclose(model(tokens, skip_layers=frozenset({1})), logits)


def test_cache_overflow_is_refused(model):
    cache = model.new_cache(1, 4)
    with pytest.raises(ValueError, match="cache holds 4"):
        model(torch.zeros(1, 5, dtype=torch.long), cache)


def test_zoo_format_round_trips(model, tmp_path):
    save_lm(model, tmp_path)
    tokens = torch.randint(0, CONFIG.vocab_size, (1, 7))
    torch.testing.assert_close(load_lm(tmp_path)(tokens), model(tokens))


def test_hf_llama_folder_loads_and_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.LlamaConfig(
        vocab_size=101,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=5000.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    reference = transformers.LlamaForCausalLM(hf_config).eval()
    reference.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf_decoder(tmp_path)
    assert ours.config.n_kv_heads == 2 and ours.config.rope_theta == 5000.0 and not ours.config.tie_embeddings
    tokens = torch.randint(0, 101, (2, 9))
    with torch.inference_mode():
        torch.testing.assert_close(ours(tokens), reference(tokens).logits, atol=1e-4, rtol=1e-4)


def test_other_decoders_and_pickled_checkpoints_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "t5", "hidden_size": 8, "architectures": ["T5ForConditionalGeneration"]})
    )
    with pytest.raises(ValueError, match="t5"):
        load_hf_decoder(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 8,
                "num_attention_heads": 2,
                "num_hidden_layers": 1,
                "intermediate_size": 16,
                "vocab_size": 10,
            }
        )
    )
    torch.save({"x": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="pickled"):
        load_hf_decoder(tmp_path)
