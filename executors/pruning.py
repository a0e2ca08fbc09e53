"""What the pruning methods share: training windows, a seeded training loop, a weight cache,
and structured slicing of a DecoderLM into a genuinely smaller dense model.

Structured units (what Adapt-Pruner removes): an FFN channel (a row of the gate and up
projections and the matching column of the down projection) and an attention unit. With
plain multi-head attention a unit is one head (its q, k, v rows and o columns). With grouped
query attention every query group must keep the same size (SDPA's `enable_gqa`), so a unit is
the r-th query head of every group — the KV heads, and so the KV cache, stay.
Because layers end up with different shapes, the result is a `PrunedDecoderLM`, whose only
difference is a KV cache sized per layer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import weakref
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from executors.lm import DecoderLM, KVCache
from executors.registry import ModelBundle

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- training data and loop

_STREAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def calibration_stream(bundle: ModelBundle) -> torch.Tensor:
    """All calibration tokens in one stream, remembered per tokenizer object (encoding takes seconds)."""
    texts, stream = _STREAMS.get(bundle.tokenizer, (None, None))
    if texts is not bundle.calibration_texts:
        eos = [bundle.tokenizer.eos_id] if bundle.tokenizer.eos_id is not None else []
        stream = torch.tensor([t for text in bundle.calibration_texts for t in bundle.tokenizer.encode(text) + eos])
        _STREAMS[bundle.tokenizer] = (bundle.calibration_texts, stream)
    return stream


def training_windows(bundle: ModelBundle, count: int, seq_len: int, seed: int) -> torch.Tensor:
    """`count` random token windows [count, seq_len + 1] from the calibration (training) split."""
    stream = calibration_stream(bundle)
    if len(stream) <= seq_len + 1:
        raise ValueError(f"calibration text has {len(stream)} tokens, needs more than {seq_len + 1}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - seq_len - 1, (count,), generator=generator)
    return torch.stack([stream[s : s + seq_len + 1] for s in starts.tolist()])


def lm_loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


def train(
    model: nn.Module,
    params: list[nn.Parameter],
    windows: torch.Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    loss_fn=lm_loss,
) -> list[float]:
    """AdamW on `params` only, seeded batch order, one thread (weights must not depend on the core count).

    Warm-up over the first tenth, then cosine decay to zero: a fresh Adam at full rate perturbs a
    trained model before its moment estimates settle, and a rate that stays high ends noisy.
    """
    if steps <= 0 or not params:
        return []
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    losses = []
    try:
        with torch.inference_mode(False), torch.enable_grad():  # a caller may hold inference mode
            model.train()
            for _ in range(steps):
                pick = torch.randint(len(windows), (batch,), generator=generator)
                loss = loss_fn(model, windows[pick])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
        model.eval()
    return losses


def recovery_objective(bundle: ModelBundle, count: int, seq_len: int, seed: int):
    """(windows, loss) to retrain with: next-token loss for a decoder; for an encoder (no LM head),
    distillation toward the unmodified encoder's embeddings (docs/encoder.md)."""
    if bundle.spec.get("family") == "encoder":
        from executors.encoder import distillation_loss, distillation_windows

        return distillation_windows(bundle, count, seq_len, seed), distillation_loss(bundle.model)
    return training_windows(bundle, count, seq_len, seed), lm_loss


def require_decoder_or_encoder(bundle: ModelBundle) -> str | None:
    """For methods whose recovery goes through `recovery_objective`."""
    if bundle.spec.get("family") == "encoder":
        return None if bundle.calibration_texts else "needs calibration text for recovery training"
    return require_decoder(bundle)


def require_decoder(bundle: ModelBundle) -> str | None:
    if bundle.spec.get("family", "decoder-lm") != "decoder-lm" or not isinstance(bundle.model, DecoderLM):
        return "prunes and retrains a decoder LM with next-token loss; this model is not one"
    if not bundle.calibration_texts:
        return "needs calibration text for recovery training"
    return None


# What a pruned model may be stacked with: it is an ordinary (smaller or sparser) DecoderLM.
COMPOSES_WITH = frozenset(
    {
        "baseline",
        "quant.int8_dynamic",
        "quant.weight_only_int4",
        "sys.compile",
        "lm.spec.swift",
        "lm.spec.medusa",
        "lm.parallel.jacobi",
    }
)


# ---------------------------------------------------------------- cache


def model_digest(model: nn.Module) -> str:
    """Content hash of the weights the result derives from (the cache key's model half)."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_path(kind: str, model: nn.Module, config) -> Path:
    from profiles.settings import get_settings

    key = hashlib.sha256(
        json.dumps({"model": model_digest(model), "config": asdict(config)}, sort_keys=True).encode()
    ).hexdigest()[:24]
    return get_settings().cache_dir / "pruning" / kind / f"{key}.safetensors"


def save_weights(model: nn.Module, path: Path, metadata: dict) -> None:
    tied = getattr(getattr(model, "config", None), "tie_embeddings", False)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not (tied and k == "output.weight")}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
    return load_file(str(path)), metadata


def cached_transform(kind: str, bundle: ModelBundle, config, build, restore) -> tuple[nn.Module, dict, bool]:
    """`build(model, bundle, config) -> (model, meta)` once per model and config; later runs
    `restore(state, meta)` from the cache. The build's wall time is kept as meta["training_s"]."""
    path = cache_path(kind, bundle.model, config)
    if path.exists():
        state, meta = read_weights(path)
        log.info("%s: loaded %s", kind, path.name)
        return restore(state, meta), meta, True
    began = time.perf_counter()
    model, meta = build(bundle.model, bundle, config)
    meta["training_s"] = round(time.perf_counter() - began, 3)
    save_weights(model, path, meta)
    return model, meta, False


def load_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Loads what `save_weights` wrote (it leaves out a tied LM head)."""
    if getattr(getattr(model, "config", None), "tie_embeddings", False):
        state = {**state, "output.weight": state["tok_embeddings.weight"]}
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------- structured slicing


class PrunedDecoderLM(DecoderLM):
    """A DecoderLM whose layers have their own head counts and FFN widths."""

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        weight = self.tok_embeddings.weight
        length = max_len or self.config.max_seq_len
        shapes = [(batch_size, layer.attention.n_kv_heads, length, self.config.head_dim) for layer in self.layers]
        return KVCache([weight.new_zeros(s) for s in shapes], [weight.new_zeros(s) for s in shapes])


def layer_shapes(model: DecoderLM) -> list[dict]:
    return [
        {
            "heads": layer.attention.n_heads,
            "kv_heads": layer.attention.n_kv_heads,
            "ffn": layer.feed_forward.w1.out_features,
        }
        for layer in model.layers
    ]


def as_pruned(model: DecoderLM) -> PrunedDecoderLM:
    """A copy of `model` as a PrunedDecoderLM (same weights, ready to be sliced)."""
    pruned = PrunedDecoderLM(model.config)
    reshape_layers(pruned, layer_shapes(model))
    pruned.load_state_dict(model.state_dict())
    return pruned.eval()


def reshape_layers(model: PrunedDecoderLM, shapes: list[dict]) -> None:
    """Resizes every layer's projections to `shapes` (weights are then loaded by the caller)."""
    head_dim = model.config.head_dim
    for layer, shape in zip(model.layers, shapes):
        attention = layer.attention
        attention.n_heads, attention.n_kv_heads = shape["heads"], shape["kv_heads"]
        dim = model.config.dim
        attention.wq = nn.Linear(dim, shape["heads"] * head_dim, bias=False)
        attention.wk = nn.Linear(dim, shape["kv_heads"] * head_dim, bias=False)
        attention.wv = nn.Linear(dim, shape["kv_heads"] * head_dim, bias=False)
        attention.wo = nn.Linear(shape["heads"] * head_dim, dim, bias=False)
        ffn = layer.feed_forward
        ffn.w1 = nn.Linear(dim, shape["ffn"], bias=False)
        ffn.w3 = nn.Linear(dim, shape["ffn"], bias=False)
        ffn.w2 = nn.Linear(shape["ffn"], dim, bias=False)


def attention_units(attention) -> list[tuple[list[int], list[int]]]:
    """Per prunable unit: (query heads, kv heads) it owns — see the module docstring."""
    heads, kv_heads = attention.n_heads, attention.n_kv_heads
    if heads == kv_heads:
        return [([h], [h]) for h in range(heads)]
    group = heads // kv_heads
    return [([g * group + r for g in range(kv_heads)], []) for r in range(group)]


def _rows(weight: torch.Tensor, heads: list[int], head_dim: int) -> torch.Tensor:
    index = torch.tensor([h * head_dim + i for h in heads for i in range(head_dim)], dtype=torch.long)
    return weight.index_select(0, index)


def _linear(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight = nn.Parameter(weight.detach().clone())
    return layer


def keep_attention_units(attention, head_dim: int, keep: list[int]) -> None:
    """Slices the attention block down to the units in `keep` (indices into attention_units)."""
    units = attention_units(attention)
    q_heads = sorted(h for u in keep for h in units[u][0])  # ascending = group-major, as SDPA groups
    kv_heads = sorted({h for u in keep for h in units[u][1]}) or list(range(attention.n_kv_heads))
    attention.wq = _linear(_rows(attention.wq.weight, q_heads, head_dim))
    attention.wk = _linear(_rows(attention.wk.weight, kv_heads, head_dim))
    attention.wv = _linear(_rows(attention.wv.weight, kv_heads, head_dim))
    attention.wo = _linear(_rows(attention.wo.weight.t(), q_heads, head_dim).t())
    attention.n_heads, attention.n_kv_heads = len(q_heads), len(kv_heads)


def keep_ffn_channels(ffn, keep: list[int]) -> None:
    index = torch.tensor(sorted(keep), dtype=torch.long)
    ffn.w1 = _linear(ffn.w1.weight.index_select(0, index))
    ffn.w3 = _linear(ffn.w3.weight.index_select(0, index))
    ffn.w2 = _linear(ffn.w2.weight.index_select(1, index))


@torch.no_grad()
def taylor_scores(block, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First-order Taylor importance |w · ∂L/∂w| summed over each unit's weights (gradients must be set).

    Returns (attention unit scores, FFN channel scores) for one block.
    """
    attention, ffn = block.attention, block.feed_forward

    def salience(linear: nn.Linear) -> torch.Tensor:
        return (linear.weight * linear.weight.grad).abs()

    q = salience(attention.wq).view(attention.n_heads, head_dim, -1).sum((1, 2))
    k = salience(attention.wk).view(attention.n_kv_heads, head_dim, -1).sum((1, 2))
    v = salience(attention.wv).view(attention.n_kv_heads, head_dim, -1).sum((1, 2))
    o = salience(attention.wo).view(-1, attention.n_heads, head_dim).sum((0, 2))
    per_head, per_kv = q + o, k + v
    unit_scores = torch.stack(
        [per_head[q_heads].sum() + (per_kv[kv].sum() if kv else 0.0) for q_heads, kv in attention_units(attention)]
    )
    channel_scores = salience(ffn.w1).sum(1) + salience(ffn.w3).sum(1) + salience(ffn.w2).sum(0)
    return unit_scores, channel_scores


def top_units(scores: torch.Tensor, keep: int) -> list[int]:
    """Indices of the `keep` highest-scoring units (ties broken by index, so deterministic)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:keep])


def kept_count(initial: int, sparsity: float) -> int:
    return max(1, math.floor(initial * (1.0 - sparsity) + 0.5))
