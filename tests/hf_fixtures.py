"""Small random Hugging Face checkpoints the tests build and save themselves (no hub): one per
architecture users have, with a byte-level BPE tokenizer trained offline where a folder needs one.

Weights are drawn with a large init range (0.2 instead of transformers' 0.02), so logits differ
visibly between two models that compute different functions: with the default init a wrong
RoPE scaling moves logits by ~1e-3 and a tolerance test could not tell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

INIT = 0.2
VOCAB = 320  # the tokenizer's 256 bytes + its merges + specials fit below this
TEXT = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"
    "        self.items.append(item)\n",
    "import os\nfor name in sorted(os.listdir('.')):\n    print(name)\n",
] * 20


def decoder_configs() -> dict[str, tuple[Any, Any]]:
    """name → (config, model class): the decoder layouts the lm family loads, each with its switches on."""
    import transformers as t

    # Plain dicts: transformers 5's config classes take rope_theta and rope_scaling through **kwargs.
    common: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 96,
        "initializer_range": INIT,
    }
    layouts: dict[str, tuple[Any, Any, dict[str, Any]]] = {
        "llama": (t.LlamaConfig, t.LlamaForCausalLM, {
            **common, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "tie_word_embeddings": False}),
        "llama3-scaled-rope": (t.LlamaConfig, t.LlamaForCausalLM, {
            **common, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
            "attention_bias": True, "mlp_bias": True, "head_dim": 32, "max_position_embeddings": 256,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 32}}),
        "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM, {
            **common, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "tie_word_embeddings": True, "rope_theta": 1e6}),
        "qwen2-yarn-window": (t.Qwen2Config, t.Qwen2ForCausalLM, {
            **common, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 512, "use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1,
            "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}}),
        "mistral": (t.MistralConfig, t.MistralForCausalLM, {
            **common, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "sliding_window": 6}),
        "gpt2": (t.GPT2Config, t.GPT2LMHeadModel, {
            "vocab_size": VOCAB, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128,
            "initializer_range": INIT}),
    }  # fmt: skip
    return {name: (config(**fields), model) for name, (config, model, fields) in layouts.items()}


def save_decoder(name: str, folder: Path, tokenizer: bool = True, seed: int = 0) -> torch.nn.Module:
    """A random decoder of one layout saved as safetensors into `folder`; returns the transformers model."""
    config, model_class = decoder_configs()[name]
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer:
        save_tokenizer(folder)
    return model


def save_tokenizer(folder: Path) -> None:
    """A byte-level BPE trained on a few lines of Python, as tokenizer.json plus its eos token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 8, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TEXT, trainer)
    tokenizer.save(str(Path(folder) / "tokenizer.json"))
    (Path(folder) / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))


def save_bert(folder: Path, seed: int = 0, **overrides) -> torch.nn.Module:
    """A random BERT encoder with the MiniLM folder's tokenizer (its vocabulary size)."""
    import shutil

    import transformers as t

    from executors.families.encoder.model import minilm_folder

    minilm = minilm_folder()
    config = t.BertConfig(
        vocab_size=json.loads((minilm / "config.json").read_text())["vocab_size"],
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=128,
        initializer_range=INIT,
        **overrides,
    )
    torch.manual_seed(seed)
    model = t.BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (minilm / name).exists():
            shutil.copy(minilm / name, Path(folder) / name)
    return model


def save_vit(folder: Path, seed: int = 0) -> torch.nn.Module:
    """A random ViT classifier on 32×32 images (8×8 patches: 16 tokens and the class token)."""
    import transformers as t

    fields: dict[str, Any] = {  # num_labels goes through PretrainedConfig's **kwargs
        "image_size": 32,
        "patch_size": 8,
        "num_channels": 3,
        "hidden_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 96,
        "num_labels": 10,
        "initializer_range": INIT,
    }
    config = t.ViTConfig(**fields)
    torch.manual_seed(seed)
    model = t.ViTForImageClassification(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model
