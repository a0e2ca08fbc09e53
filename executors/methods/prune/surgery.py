"""What the pruning methods share: training windows, recovery training (on the shared loop),
the cached transform, and structured slicing of a DecoderLM into a genuinely smaller dense model.

Structured units (what Adapt-Pruner removes): an FFN channel (a row of the gate and up
projections and the matching column of the down projection) and an attention unit. With
plain multi-head attention a unit is one head (its q, k, v rows and o columns). With grouped
query attention every query group must keep the same size (SDPA's `enable_gqa`), so a unit is
the r-th query head of every group — the KV heads, and so the KV cache, stay.
Because layers end up with different shapes, the result is a `PrunedDecoderLM`, whose only
difference is a KV cache sized per layer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict

import torch
from torch import nn

from executors.caching import cached_tensors, state_without_tied_head
from executors.families import family_hook
from executors.families.lm.model import DecoderLM, KVCache
from executors.families.lm.workloads import lm_loss
from executors.registry import ModelBundle
from executors.training import Schedule
from executors.training import train as run_training

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- training data and loop


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
    """Recovery training of `params` only on seeded batches of `windows` (executors/training.py).

    Warm-up over the first tenth, then cosine decay to zero: a fresh Adam at full rate perturbs a
    trained model before its moment estimates settle, and a rate that stays high ends noisy.
    """

    def step_loss(step: int, generator: torch.Generator) -> torch.Tensor:
        return loss_fn(model, windows[torch.randint(len(windows), (batch,), generator=generator)])

    schedule = Schedule(lr, steps, warmup=max(1, steps // 10), betas=(0.9, 0.95), clip=1.0)
    return run_training(params, step_loss, schedule, seed=seed, modules=[model], name="recovery", log_every=0).losses


def recovery_objective(bundle: ModelBundle, count: int, seq_len: int, seed: int):
    """(windows, loss) to retrain with, from the bundle's family (next-token loss for a decoder,
    distillation toward the unmodified model's embeddings for an encoder, docs/encoder.md)."""
    recovery = family_hook(bundle, "recovery")
    assert recovery is not None, "require_recovery() is part of the method's supports()"
    return recovery(bundle, count, seq_len, seed)


def require_recovery(bundle: ModelBundle) -> str | None:
    """For methods whose recovery goes through `recovery_objective`."""
    if family_hook(bundle, "recovery") is None or "transformer_blocks" not in bundle.capabilities:
        return "prunes transformer blocks and retrains them; this model's family has no recovery objective"
    if "kv_cache" in bundle.capabilities and "llama_layout" not in bundle.capabilities:
        return PLAIN_DECODERS_ONLY
    return None if bundle.calibration_texts else "needs calibration text for recovery training"


# The slices rebuild SwiGLU rows and bias-free projections: a decoder of another layout would lose weights.
PLAIN_DECODERS_ONLY = "slices decoders of the plain Llama layout (SwiGLU, no biases); this one differs"


def require_decoder(bundle: ModelBundle) -> str | None:
    if not {"kv_cache", "next_token_loss"} <= bundle.capabilities:
        return "slices and retrains a decoder LM with next-token loss; this model is not one"
    if "llama_layout" not in bundle.capabilities:
        return PLAIN_DECODERS_ONLY
    return None if bundle.calibration_texts else "needs calibration text for recovery training"


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


def cached_transform(kind: str, bundle: ModelBundle, config, build, restore) -> tuple[nn.Module, dict, bool]:
    """`build(model, bundle, config) -> (model, meta)` once per model and config; later runs
    `restore(state, meta)` from the cache. The build's wall time is kept as meta["training_s"]."""
    built: list[nn.Module] = []

    def make():
        model, meta = build(bundle.model, bundle, config)
        built.append(model)
        return state_without_tied_head(model), meta

    cached = cached_tensors(kind, bundle.model, asdict(config), make)
    meta = {**cached.meta, "training_s": cached.build_s}
    return (restore(cached.tensors, meta) if cached.hit else built[0]), meta, cached.hit


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
    for layer, shape in zip(model.layers, shapes, strict=False):
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
        assert linear.weight.grad is not None, "taylor_scores reads the gradients of a backward pass"
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
