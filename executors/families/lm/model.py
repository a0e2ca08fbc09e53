"""One LLaMA-style decoder for the zoo LMs and for SmolLM2 (RoPE, RMSNorm, SwiGLU, GQA).

Kept small like gpt-fast: the KV cache is preallocated per layer so decoding never
reallocates, and it can be cropped back to a prefix, which speculative decoding needs when a
draft is rejected. The rotary convention is Hugging Face's (rotate the two halves), so HF Llama
checkpoints load without permuting q/k weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from executors.registry import TransformerBlock, unwrap

if TYPE_CHECKING:
    from executors.registry import BlockList


@dataclass(frozen=True)
class LMConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    max_seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def parameter_count(self) -> int:
        """What `count_parameters(DecoderLM(self))` returns, without building the model."""
        attention = self.dim * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        block = attention + 3 * self.dim * self.ffn_dim + 2 * self.dim
        head = 0 if self.tie_embeddings else self.vocab_size * self.dim
        return self.vocab_size * self.dim + self.n_layers * block + self.dim + head


class KVCache:
    """Per-layer preallocated keys/values [B, n_kv_heads, max_len, head_dim]; rows share `length`."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], length: int = 0):
        self.keys = keys
        self.values = values
        self.length = length

    @classmethod
    def empty(
        cls, config: LMConfig, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device
    ) -> KVCache:
        shape = (batch_size, config.n_kv_heads, max_len, config.head_dim)
        keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        return cls(keys, values)

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    def crop(self, length: int) -> None:
        """Roll back to the first `length` tokens (later slots are simply overwritten next time)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot crop a cache of length {self.length} to {length}")
        self.length = length

    def clone(self) -> KVCache:
        return KVCache([k.clone() for k in self.keys], [v.clone() for v in self.values], self.length)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.wq = nn.Linear(config.dim, config.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(config.n_heads * self.head_dim, config.dim, bias=False)

    def forward(
        self, x, cos, sin, layer_cache: tuple[torch.Tensor, torch.Tensor] | None, start: int, mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, steps, _ = x.shape
        q = self.wq(x).view(batch, steps, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if layer_cache is not None:
            cache_k, cache_v = layer_cache
            cache_k[:, :, start : start + steps] = k
            cache_v[:, :, start : start + steps] = v
            k, v = cache_k[:, :, : start + steps], cache_v[:, :, : start + steps]
        gqa = self.n_heads != self.n_kv_heads
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=steps > 1, enable_gqa=gqa)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.wo(out.transpose(1, 2).reshape(batch, steps, -1))


class FeedForward(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.ffn_dim, bias=False)  # gate
        self.w3 = nn.Linear(config.dim, config.ffn_dim, bias=False)  # up
        self.w2 = nn.Linear(config.ffn_dim, config.dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(TransformerBlock):
    attention: Attention
    feed_forward: FeedForward

    def __init__(self, config: LMConfig):
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config)

    def forward(self, x, cos, sin, layer_cache, start, mask):
        x = x + self.attention(self.attention_norm(x), cos, sin, layer_cache, start, mask)
        return x + self.feed_forward(self.ffn_norm(x))

    def attention_map(self, x, cos, sin, layer_cache=None, start=0, mask=None) -> torch.Tensor:
        """The causal attention probabilities [B, H, T, T] this block computes on `x` (no cache):
        what SDPA computes but does not return, for calibration objectives that match them."""
        attn, (batch, steps, _) = self.attention, x.shape
        h = self.attention_norm(x)
        q = attn.wq(h).view(batch, steps, attn.n_heads, attn.head_dim).transpose(1, 2)
        k = attn.wk(h).view(batch, steps, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k = k.repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=1)
        keep = torch.ones(steps, steps, dtype=torch.bool, device=x.device).tril()
        return (q @ k.transpose(-1, -2) / attn.head_dim**0.5).masked_fill(~keep, float("-inf")).softmax(-1)


class DecoderLM(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = cast("BlockList[Block]", nn.ModuleList(Block(config) for _ in range(config.n_layers)))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        # Small embedding init: with tied output weights, N(0, 1) would start at huge logits.
        nn.init.normal_(self.tok_embeddings.weight, std=0.02)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        weight = self.tok_embeddings.weight
        return KVCache.empty(self.config, batch_size, max_len or self.config.max_seq_len, weight.dtype, weight.device)

    def forward(
        self,
        tokens: torch.Tensor,
        cache: KVCache | None = None,
        *,
        skip_layers: frozenset[int] = frozenset(),
        return_hidden: bool = False,
        positions: torch.Tensor | None = None,
        tree_mask: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
    ):
        """`embeddings` [B, T, D], when given, are fed instead of looking `tokens` up (trained
        prompt tokens, as in parallel prompt decoding, have no token id)."""
        steps = tokens.shape[1]
        start = cache.length if cache is not None else 0
        if cache is not None and start + steps > cache.max_len:
            raise ValueError(f"cache holds {cache.max_len} tokens; {start + steps} needed")
        if positions is None:
            positions = torch.arange(start, start + steps, device=tokens.device)
        cos, sin = rotary(positions, self.config.head_dim, self.config.rope_theta)
        mask = _attention_mask(start, steps, tree_mask, tokens.device)
        x = self.tok_embeddings(tokens) if embeddings is None else embeddings
        for index, layer in enumerate(self.layers):
            if index in skip_layers:
                continue
            layer_cache = (cache.keys[index], cache.values[index]) if cache is not None else None
            x = layer(x, cos, sin, layer_cache, start, mask)
        if cache is not None:
            cache.length = start + steps
        hidden = self.norm(x)
        logits = self.output(hidden).float()
        return (logits, hidden) if return_hidden else logits


def _attention_mask(
    start: int, steps: int, tree_mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    """None where SDPA's own causal flag is exact (no prefix, or a single new token)."""
    if tree_mask is None and (start == 0 or steps == 1):
        return None
    new = tree_mask if tree_mask is not None else torch.ones(steps, steps, dtype=torch.bool, device=device).tril()
    prefix = torch.ones(steps, start, dtype=torch.bool, device=device)
    return torch.cat((prefix, new.to(device=device, dtype=torch.bool)), dim=1)


def decoder_of(model: nn.Module) -> DecoderLM:
    """An lm-family model (a bundle's, a runner's) as the DecoderLM it is under any compile wrapper."""
    decoder = unwrap(model)
    assert isinstance(decoder, DecoderLM), f"an lm-family model is a DecoderLM, not {type(decoder).__name__}"
    return decoder


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
