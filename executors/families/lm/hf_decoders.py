"""Hugging Face decoder checkpoints in the family's own DecoderLM: Llama (SmolLM), Qwen2, Mistral, GPT-2.

A checkpoint's `config.json` maps onto `LMConfig`'s switches (projection biases, tied
embeddings, grouped KV heads, scaled RoPE, a sliding window, learned positions with LayerNorm
and a GELU MLP), its safetensors tensors onto the decoder's names. Nothing is unpickled and no
checkpoint code runs: a config that asks for its own (`auto_map`) or names a layout DecoderLM
does not compute (another activation, partial rotary, attention-logit soft-capping, a RoPE
scaling other than linear / llama3 / yarn) is refused with what it asked for, so a model never
loads into something that computes a different function. `describe` gives the same config's
descriptors without weights: what registering a `config.json` alone stores.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from executors.families import check_fit
from executors.families.lm.model import DecoderLM, LMConfig, count_parameters

# model_type → the architecture classes of it whose weights we take (the CausalLM head, or the bare model).
MODEL_TYPES: dict[str, tuple[str, ...]] = {
    "llama": ("LlamaForCausalLM", "LlamaModel"),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Model"),
    "mistral": ("MistralForCausalLM", "MistralModel"),
    "gpt2": ("GPT2LMHeadModel", "GPT2Model"),
}
ROPE_TYPES: tuple[str, ...] = ("default", "linear", "llama3", "yarn")
GPT2_GELU: dict[str, str] = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "erf"}

_LLAMA_NAMES = [
    (r"embed_tokens\.weight", "tok_embeddings.weight"),
    (r"norm\.weight", "norm.weight"),
    (r"layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)", r"layers.\1.attention.w\2.\3"),
    (r"layers\.(\d+)\.mlp\.gate_proj\.(weight|bias)", r"layers.\1.feed_forward.w1.\2"),
    (r"layers\.(\d+)\.mlp\.up_proj\.(weight|bias)", r"layers.\1.feed_forward.w3.\2"),
    (r"layers\.(\d+)\.mlp\.down_proj\.(weight|bias)", r"layers.\1.feed_forward.w2.\2"),
    (r"layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.attention_norm.weight"),
    (r"layers\.(\d+)\.post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
]
_GPT2_NAMES = [
    (r"wte\.weight", "tok_embeddings.weight"),
    (r"wpe\.weight", "pos_embeddings.weight"),
    (r"ln_f\.(weight|bias)", r"norm.\1"),
    (r"h\.(\d+)\.ln_1\.(weight|bias)", r"layers.\1.attention_norm.\2"),
    (r"h\.(\d+)\.ln_2\.(weight|bias)", r"layers.\1.ffn_norm.\2"),
    (r"h\.(\d+)\.attn\.c_attn\.(weight|bias)", r"layers.\1.attention.wqkv.\2"),  # fused: split below
    (r"h\.(\d+)\.attn\.c_proj\.(weight|bias)", r"layers.\1.attention.wo.\2"),
    (r"h\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"layers.\1.feed_forward.w1.\2"),
    (r"h\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"layers.\1.feed_forward.w2.\2"),
]


class UnsupportedCheckpoint(ValueError):
    """A config this family cannot compute exactly; the message says what it asked for."""


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no config.json")
    return json.loads(path.read_text())


def is_hf_decoder_folder(folder: Path) -> bool:
    """A Hugging Face decoder folder of a type this family loads (a BERT folder also has `hidden_size`:
    the model type tells them apart; the zoo's own folders have neither)."""
    path = Path(folder) / "config.json"
    if not path.exists():
        return False
    hf = json.loads(path.read_text())
    return hf.get("model_type", "llama") in MODEL_TYPES and ("hidden_size" in hf or "n_embd" in hf)


def _get(hf: dict, key: str, default=None):
    value = hf.get(key, default)
    return default if value is None else value


def _rope(hf: dict) -> tuple[float, tuple[tuple[str, float | str], ...]]:
    """(theta, scaling) from transformers 5's `rope_parameters` or the older `rope_theta` + `rope_scaling`."""
    parameters = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    merged = {**parameters, **scaling}  # a legacy rope_scaling is what older configs (and edits) say
    kind = merged.get("rope_type", merged.get("type", "default"))
    theta = float(merged.get("rope_theta", _get(hf, "rope_theta", 10000.0)))
    if kind not in ROPE_TYPES:
        raise UnsupportedCheckpoint(f"RoPE scaling {kind!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
    if float(merged.get("partial_rotary_factor", hf.get("partial_rotary_factor") or 1.0)) != 1.0:
        raise UnsupportedCheckpoint("partial rotary embeddings are not supported")
    if kind == "default":
        return theta, ()
    if kind == "yarn" and merged.get("factor") is None:
        merged["factor"] = hf["max_position_embeddings"] / merged["original_max_position_embeddings"]
    keep = {k: v for k, v in merged.items() if k not in ("type", "rope_theta") and isinstance(v, (int, float, str))}
    return theta, tuple(sorted({**keep, "rope_type": kind}.items()))


def _sliding(hf: dict, layers: int) -> tuple[int | None, tuple[int, ...] | None]:
    """The window and the layers it applies to: Mistral's on every layer, Qwen2's by `layer_types`."""
    window = hf.get("sliding_window")
    if hf.get("use_sliding_window") is False or not window:
        return None, None
    types = hf.get("layer_types")
    if types:
        sliding = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
        return (int(window), sliding) if sliding else (None, None)
    if hf.get("model_type") == "qwen2":  # configs written before layer_types: the layers from max_window_layers up
        return int(window), tuple(range(int(_get(hf, "max_window_layers", layers)), layers))
    return int(window), None


def _llama_like(hf: dict) -> LMConfig:
    if _get(hf, "hidden_act", "silu") != "silu":
        raise UnsupportedCheckpoint(f"activation {hf.get('hidden_act')!r} is not supported (SwiGLU uses silu)")
    heads, layers = hf["num_attention_heads"], hf["num_hidden_layers"]
    theta, scaling = _rope(hf)
    window, sliding = _sliding(hf, layers)
    head_dim = hf.get("head_dim")
    bias = bool(hf.get("attention_bias", False))
    return LMConfig(
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=_get(hf, "num_key_value_heads", heads),
        ffn_dim=hf["intermediate_size"],
        max_seq_len=_get(hf, "max_position_embeddings", 2048),
        rope_theta=theta,
        norm_eps=float(_get(hf, "rms_norm_eps", 1e-6)),
        tie_embeddings=bool(_get(hf, "tie_word_embeddings", False)),
        qkv_bias=bias or hf.get("model_type") == "qwen2",  # Qwen2 always has q/k/v biases
        out_bias=bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        rope_scaling=scaling,
        sliding_window=window,
        sliding_layers=sliding,
        explicit_head_dim=head_dim if head_dim and head_dim != hf["hidden_size"] // heads else None,
    )


def _gpt2(hf: dict) -> LMConfig:
    activation = _get(hf, "activation_function", "gelu_new")
    if activation not in GPT2_GELU:
        raise UnsupportedCheckpoint(f"GPT-2 activation {activation!r} is not supported ({', '.join(GPT2_GELU)})")
    if hf.get("scale_attn_by_inverse_layer_idx") or not _get(hf, "scale_attn_weights", True):
        raise UnsupportedCheckpoint("GPT-2 attention scaled other than by 1/sqrt(head size) is not supported")
    if hf.get("add_cross_attention"):
        raise UnsupportedCheckpoint("GPT-2 with cross-attention is an encoder-decoder, not a decoder LM")
    dim, heads = hf["n_embd"], hf["n_head"]
    return LMConfig(
        vocab_size=hf["vocab_size"],
        dim=dim,
        n_layers=hf["n_layer"],
        n_heads=heads,
        n_kv_heads=heads,
        ffn_dim=_get(hf, "n_inner", 4 * dim),
        max_seq_len=hf["n_positions"],
        norm_eps=float(_get(hf, "layer_norm_epsilon", 1e-5)),
        tie_embeddings=bool(_get(hf, "tie_word_embeddings", True)),
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        mlp="gelu",
        gelu=GPT2_GELU[activation],
        norm="layer",
        positions="learned",
    )


def decoder_config(hf: dict) -> LMConfig:
    """The LMConfig a Hugging Face decoder config describes, or UnsupportedCheckpoint saying why not."""
    if "auto_map" in hf:
        raise UnsupportedCheckpoint("this checkpoint asks for its own code (auto_map); remote code is never run")
    model_type = hf.get("model_type", "llama")
    if model_type not in MODEL_TYPES:
        raise UnsupportedCheckpoint(f"model type {model_type!r} is not a decoder this family loads")
    architectures = hf.get("architectures") or [MODEL_TYPES[model_type][0]]
    if architectures[0] not in MODEL_TYPES[model_type]:
        raise UnsupportedCheckpoint(
            f"architecture {architectures[0]} is not one of {', '.join(MODEL_TYPES[model_type])}"
        )
    if hf.get("attn_logit_softcapping") or hf.get("final_logit_softcapping"):
        raise UnsupportedCheckpoint("logit soft-capping is not supported")
    try:
        return _gpt2(hf) if model_type == "gpt2" else _llama_like(hf)
    except KeyError as exc:
        raise UnsupportedCheckpoint(f"config.json has no {exc.args[0]!r}") from None


def describe(hf: dict) -> dict:
    """The descriptors of a decoder config, as the store's ModelSpec holds them (no weights needed)."""
    config = decoder_config(hf)
    with torch.device("meta"):  # exact parameter count, no memory, no weights
        params = count_parameters(DecoderLM(config))
    return {
        "family": "decoder-lm",
        "params": params,
        "layers": config.n_layers,
        "width": config.dim,
        "heads": config.n_heads,
        "kv_heads": config.n_kv_heads,
        "vocab": config.vocab_size,
        "context": config.max_seq_len,
        # ffn_dim as the zoo's bundles say it (a numeric descriptor is a feature of the advisor); the layout in words
        "descriptors": {"ffn_dim": config.ffn_dim, "layout": layout_words(config)},
    }


def layout_words(config: LMConfig) -> str:
    """What sets a decoder apart from the zoo's plain layout, in words ("plain" if nothing)."""
    scaling = dict(config.rope_scaling).get("rope_type")
    parts = [
        "learned positions, LayerNorm, GELU MLP" if config.positions == "learned" else "",
        "q/k/v biases" if config.qkv_bias and not config.out_bias else "biases" if config.qkv_bias else "",
        f"{scaling} RoPE scaling" if scaling else "",
        f"sliding window {config.sliding_window}" if config.sliding_window else "",
        f"GQA {config.n_heads}:{config.n_kv_heads}" if config.n_kv_heads != config.n_heads else "",
        "tied embeddings" if config.tie_embeddings else "",
    ]
    return ", ".join(p for p in parts if p) or "plain"


def _rename(name: str, gpt2: bool) -> str | None:
    """A checkpoint tensor's name in DecoderLM; None for what is recomputed (rotary tables, GPT-2 masks)."""
    if name.endswith("rotary_emb.inv_freq") or re.search(r"\.attn\.(bias|masked_bias)$", name):
        return None
    if name == "lm_head.weight":
        return "output.weight"
    bare = re.sub(r"^(model|transformer)\.", "", name)
    for pattern, target in _GPT2_NAMES if gpt2 else _LLAMA_NAMES:
        if re.fullmatch(pattern, bare):
            return re.sub(pattern, target, bare)
    raise UnsupportedCheckpoint(f"unexpected tensor {name!r} in a {'GPT-2' if gpt2 else 'Llama-family'} checkpoint")


def _gpt2_layout(state: dict[str, torch.Tensor], config: LMConfig) -> dict[str, torch.Tensor]:
    """GPT-2's Conv1D weights are stored [in, out], and q, k, v as one fused projection."""
    out = {}
    for name, tensor in state.items():
        conv = re.search(r"\.(wqkv|wo|w1|w2)\.weight$", name)
        tensor = tensor.t().contiguous() if conv else tensor
        if ".wqkv." in name:
            for part, piece in zip("qkv", tensor.split(config.dim, dim=0), strict=True):
                out[name.replace(".wqkv.", f".w{part}.")] = piece.contiguous()
        else:
            out[name] = tensor
    return out


def _ours(config: LMConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors under DecoderLM's names and layout."""
    gpt2 = config.positions == "learned"
    state = {ours: tensor for name, tensor in tensors.items() if (ours := _rename(name, gpt2)) is not None}
    return _gpt2_layout(state, config) if gpt2 else state


def load_hf_decoder(folder: Path) -> DecoderLM:
    """A local HF decoder folder (config.json + *.safetensors) → DecoderLM, weights only."""
    folder = Path(folder)
    config = decoder_config(read_config(folder))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors files (pickled checkpoints are refused)")
    tensors = {name: tensor.float() for path in files for name, tensor in load_file(str(path)).items()}
    model = DecoderLM(config)
    load_state(model, _ours(config, tensors))
    return model.eval()


def check_weights(hf: dict, shapes: dict[str, list[int]]) -> None:
    """Whether the tensors a checkpoint's safetensors headers name fill this config's DecoderLM exactly:
    checked at registration on empty (meta) tensors, so a wrong checkpoint is refused before a worker loads it."""
    config = decoder_config(hf)
    with torch.device("meta"):
        model = DecoderLM(config)
        state = _ours(config, {name: torch.empty(shape) for name, shape in shapes.items()})
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_embeddings:  # the head is the embedding, stored or not
        expected.pop("output.weight")
        state.pop("output.weight", None)
    check_fit(expected, {k: tuple(v.shape) for k, v in state.items()})


def load_state(model: DecoderLM, state: dict[str, torch.Tensor]) -> None:
    """Every parameter exactly once; a tied head takes the embedding."""
    if model.config.tie_embeddings and "tok_embeddings.weight" in state:
        state = {**state, "output.weight": state["tok_embeddings.weight"]}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UnsupportedCheckpoint(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")
