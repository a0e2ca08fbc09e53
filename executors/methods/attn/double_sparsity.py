"""`attn.double_sparsity`: token sparsity chosen through offline-calibrated channel sparsity.

Paper: Yang et al., "Post-Training Sparse Attention with Double Sparsity" (arXiv 2408.07092).
Which channels of q·k matter is nearly static per head, so it is found once offline: on
calibration text (training split) every attention layer's post-RoPE queries and keys are
recorded and each channel scored by the paper's best criterion, mean |q_c · k_c| over tokens
("qk"; the paper also compares mean |q_c| and mean |k_c|, kept as options). Query heads that
share a KV head add their scores, since one label cache serves the group.

At decode, a *label cache* holds the r chosen channels of every key, contiguously, beside the
KV cache. Each step scores all tokens approximately by q[channels] · label, keeps the top-k
and runs exact softmax attention over those tokens only (accel_kernels/dispatch.py: the Triton
kernel on CUDA, the grouped PyTorch reference elsewhere). Prefill stays dense, as in the
paper's serving system. The model's plain forward (no cache: held-out perplexity) applies the
same selection to every position, the paper's offline evaluation. Not lossless.

Not done: the paper's 4-bit label cache and its KV offloading (Double Sparsity-Offload).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from accel_kernels import dispatch
from executors.families import default_runner
from executors.families.lm.model import DecoderLM, KVCache, _attention_mask, apply_rotary, rotary
from executors.registry import Method, MethodConfig, register_method

CRITERIA = ("qk", "q", "k")
SIMULATION_ROWS = 256  # query rows per chunk when every position is sparse (bounds the score matrix)


@dataclass(frozen=True)
class DoubleSparsityConfig(MethodConfig):
    channel_ratio: float = 0.125  # label channels r = ratio × head_dim (paper: 1/8 … 1/16)
    token_ratio: float = 0.0625  # top-k tokens = ratio × context (paper: 1/16)
    min_tokens: int = 64  # never attend to fewer tokens than this (short contexts stay dense)
    criterion: str = "qk"
    dense_layers: int = 1  # leading layers kept dense: r channels miss layer 0's pattern (docs/long-context.md)
    calibration_windows: int = 16
    calibration_len: int = 512
    version: int = 1


def token_budget(config: DoubleSparsityConfig, context: int) -> int:
    return min(context, max(config.min_tokens, math.ceil(config.token_ratio * context)))


def label_channels(config: DoubleSparsityConfig, head_dim: int) -> int:
    return max(1, min(head_dim, round(config.channel_ratio * head_dim)))


class LabelledCache(KVCache):
    """The KV cache plus each sparse layer's label cache [B, Hkv, max_len, r] (None: dense layer)."""

    def __init__(self, keys, values, labels, length: int = 0):
        super().__init__(keys, values, length)
        self.labels = labels


def _qkv(attention, x, cos, sin):
    batch, steps, _ = x.shape
    q = attention.wq(x).view(batch, steps, attention.n_heads, attention.head_dim).transpose(1, 2)
    k = attention.wk(x).view(batch, steps, attention.n_kv_heads, attention.head_dim).transpose(1, 2)
    v = attention.wv(x).view(batch, steps, attention.n_kv_heads, attention.head_dim).transpose(1, 2)
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v


def channel_importance(q: torch.Tensor, k: torch.Tensor, criterion: str) -> torch.Tensor:
    """[Hkv, D] summed over tokens: q [B, H, T, D], k [B, Hkv, T, D] (post-RoPE)."""
    kv_heads, dim = k.shape[1], k.shape[3]
    grouped_q = q.reshape(q.shape[0], kv_heads, -1, q.shape[2], dim)  # [B, Hkv, G, T, D]
    if criterion == "qk":  # each token's query against its own key, as the paper calibrates
        score = (grouped_q * k[:, :, None]).abs()
    elif criterion == "q":
        score = grouped_q.abs()
    elif criterion == "k":
        score = k[:, :, None].abs()
    else:
        raise ValueError(f"criterion must be one of {CRITERIA}, not {criterion!r}")
    return score.sum(dim=(0, 2, 3))


def _simulated_sparse(q, k, v, channels, budget: int) -> torch.Tensor:
    """Every query row attends (causally) to its top-`budget` tokens by label score only."""
    batch, heads, steps, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    grouped = q.reshape(batch, kv_heads, group, steps, dim)
    index = channels[None, :, None, None, :]
    q_sel = torch.gather(grouped, 4, index.expand(batch, -1, group, steps, -1))
    labels = torch.gather(k, 3, channels[None, :, None, :].expand(batch, -1, steps, -1))
    keys, values = k[:, :, None], v[:, :, None]
    out = torch.empty_like(grouped)
    columns = torch.arange(steps, device=q.device)
    for first in range(0, steps, SIMULATION_ROWS):
        rows = slice(first, min(steps, first + SIMULATION_ROWS))
        future = columns[None, :] > columns[rows, None]  # [rows, T]
        approx = (q_sel[:, :, :, rows] @ labels[:, :, None].transpose(-1, -2)).masked_fill(future, float("-inf"))
        keep = torch.zeros_like(approx, dtype=torch.bool).scatter_(-1, approx.topk(budget, dim=-1).indices, True)
        exact = (grouped[:, :, :, rows] @ keys.transpose(-1, -2)) / math.sqrt(dim)
        exact = exact.masked_fill(~keep | future, float("-inf"))
        out[:, :, :, rows] = exact.softmax(-1) @ values
    return out.reshape(batch, heads, steps, dim)


class DoubleSparseLM(nn.Module):
    """The model's own layers, with Double Sparsity attention in the calibrated layers."""

    def __init__(self, model: DecoderLM, channels: list[torch.Tensor | None], config: DoubleSparsityConfig):
        super().__init__()
        self.base = model
        self.config = model.config
        self.sparsity = config
        self.channels = channels  # plain tensors: int indices, not weights

    def new_cache(self, batch_size: int, max_len: int | None = None) -> LabelledCache:
        plain = self.base.new_cache(batch_size, max_len)
        labels = [
            None if ch is None else torch.zeros(*k.shape[:3], len(ch[0]), dtype=k.dtype, device=k.device)
            for ch, k in zip(self.channels, plain.keys, strict=False)
        ]
        return LabelledCache(plain.keys, plain.values, labels)

    def forward(self, tokens: torch.Tensor, cache: LabelledCache | None = None) -> torch.Tensor:
        base = self.base
        steps = tokens.shape[1]
        start = cache.length if cache is not None else 0
        if cache is not None and start + steps > cache.max_len:
            raise ValueError(f"cache holds {cache.max_len} tokens; {start + steps} needed")
        cos, sin = rotary(
            torch.arange(start, start + steps, device=tokens.device), base.config.head_dim, base.config.rope_theta
        )
        x = base.tok_embeddings(tokens)
        for index, layer in enumerate(base.layers):
            h = layer.attention_norm(x)
            x = x + self._attend(index, layer.attention, h, cos, sin, cache, start)
            x = x + layer.feed_forward(layer.ffn_norm(x))
        if cache is not None:
            cache.length = start + steps
        return base.output(base.norm(x)).float()

    def _attend(self, index, attention, x, cos, sin, cache, start) -> torch.Tensor:
        batch, steps, _ = x.shape
        q, k, v = _qkv(attention, x, cos, sin)
        channels = self.channels[index]
        if cache is not None:
            end = start + steps
            cache.keys[index][:, :, start:end] = k
            cache.values[index][:, :, start:end] = v
            if channels is not None:
                cache.labels[index][:, :, start:end] = torch.gather(
                    k, 3, channels[None, :, None, :].expand(batch, -1, steps, -1)
                )
            k, v = cache.keys[index][:, :, :end], cache.values[index][:, :, :end]
        context = k.shape[2]
        budget = token_budget(self.sparsity, context)
        if channels is None or budget >= context:
            out = self._dense(q, k, v, start, steps)
        elif cache is not None and steps == 1:
            seq_lens = torch.full((batch,), context, dtype=torch.int32, device=q.device)
            out = dispatch.double_sparsity_decode(
                q[:, :, 0], cache.keys[index], cache.values[index], cache.labels[index], channels, budget, seq_lens
            )[:, :, None]
        elif cache is None:
            out = _simulated_sparse(q, k, v, channels, budget)
        else:
            out = self._dense(q, k, v, start, steps)  # prefill of a cached generation: dense, as the paper serves
        return attention.wo(out.transpose(1, 2).reshape(batch, steps, -1))

    @staticmethod
    def _dense(q, k, v, start, steps):
        mask = _attention_mask(start, steps, None, q.device)
        gqa = q.shape[1] != k.shape[1]
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=steps > 1, enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def calibration_windows(bundle, config: DoubleSparsityConfig) -> torch.Tensor:
    """Training-split windows (never held-out text) at the configured length."""
    length = min(config.calibration_len, bundle.model.config.max_seq_len)
    stream = [t for text in bundle.calibration_texts for t in bundle.tokenizer.encode(text)]
    if len(stream) < length:
        raise ValueError(f"attn.double_sparsity: {len(stream)} calibration tokens, needs {length}")
    stride = max(1, (len(stream) - length) // config.calibration_windows)
    return torch.tensor(
        [
            stream[i * stride : i * stride + length]
            for i in range(config.calibration_windows)
            if i * stride + length <= len(stream)
        ]
    )


@torch.inference_mode()
def calibrate(model: DecoderLM, windows: torch.Tensor, config: DoubleSparsityConfig) -> list[torch.Tensor | None]:
    """Per layer: the r most important channels of each KV head [Hkv, r] (None for dense layers)."""
    lm_config = model.config
    r = label_channels(config, lm_config.head_dim)
    importance = [torch.zeros(lm_config.n_kv_heads, lm_config.head_dim) for _ in model.layers]
    device = model.tok_embeddings.weight.device
    for window in windows.split(4):
        window = window.to(device)
        cos, sin = rotary(torch.arange(window.shape[1], device=device), lm_config.head_dim, lm_config.rope_theta)
        x = model.tok_embeddings(window)
        for index, layer in enumerate(model.layers):
            h = layer.attention_norm(x)
            q, k, v = _qkv(layer.attention, h, cos, sin)
            importance[index] += channel_importance(q.float(), k.float(), config.criterion).cpu()
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])
            x = x + layer.attention.wo(out.transpose(1, 2).reshape(*window.shape, -1))
            x = x + layer.feed_forward(layer.ffn_norm(x))
    return [
        None if index < config.dense_layers else scores.topk(r, dim=-1).indices.sort(dim=-1).values.to(device)
        for index, scores in enumerate(importance)
    ]


@register_method(
    "attn.double_sparsity",
    DoubleSparsityConfig,
    category="attention-sparsity",
    families=("longctx",),
    changes=("outputs",),
    paper="Post-Training Sparse Attention with Double Sparsity",
    arxiv="2408.07092",
    catalogue_row=15,
    lossless=False,
)
class DoubleSparsity(Method):
    order = 90  # wraps the (possibly quantized) model and decodes it: last in a composite
    composes_with = frozenset({"quant.int8_dynamic", "quant.weight_only_int4"})
    requirements = {"devices": ["cpu", "cuda"], "triton": "on CUDA (the PyTorch path elsewhere)"}

    def supports(self, bundle, device):
        model = bundle.model
        if "kv_cache" not in bundle.capabilities:
            return "needs a decoder LM with per-layer attention and a KV cache (executors.families.lm)"
        if "llama_layout" not in bundle.capabilities:  # its attention re-runs the layers with plain RoPE
            return "re-runs attention in the plain Llama layout; this decoder's positions, biases or window differ"
        defaults = DoubleSparsityConfig()
        if model.config.max_seq_len <= defaults.min_tokens:
            return (
                f"the model's context of {model.config.max_seq_len} tokens never exceeds the "
                f"{defaults.min_tokens}-token budget: attention would stay dense"
            )
        return None

    def apply(self, bundle, config):
        if config.criterion not in CRITERIA:
            raise ValueError(f"attn.double_sparsity: criterion must be one of {CRITERIA}")
        if not (0 < config.token_ratio <= 1 and 0 < config.channel_ratio <= 1):
            raise ValueError("attn.double_sparsity: token_ratio and channel_ratio must be in (0, 1]")
        channels = calibrate(bundle.model, calibration_windows(bundle, config), config)
        backend, reason = dispatch.backend_for(bundle.model.tok_embeddings.weight.device)
        stats = {
            "label_channels": label_channels(config, bundle.model.config.head_dim),
            "token_ratio": config.token_ratio,
            "min_tokens": config.min_tokens,
            "sparse_layers": sum(ch is not None for ch in channels),
            "kernel_backend": backend,
            "kernel_backend_reason": reason,
        }
        return default_runner(bundle, DoubleSparseLM(bundle.model, channels, config), stats)
