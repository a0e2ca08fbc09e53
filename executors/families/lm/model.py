"""One LLaMA-style decoder for the zoo LMs, SmolLM2 and a user's Hugging Face decoder.

Kept small like gpt-fast: the KV cache is preallocated per layer so decoding never
reallocates, and it can be cropped back to a prefix, which speculative decoding needs when a
draft is rejected. The rotary convention is Hugging Face's (rotate the two halves), so HF Llama
checkpoints load without permuting q/k weights.

The zoo's models are the plain layout (RoPE, RMSNorm, SwiGLU, no biases). The config's other
switches are what the decoders users have need, as litgpt's one GPT class does for many
checkpoints: projection biases (Qwen2's q/k/v, GPT-2's every linear), scaled RoPE (linear,
Llama 3, YaRN), a sliding attention window (Mistral), learned positions with LayerNorm and a
GELU MLP (GPT-2). `executors/families/lm/hf_decoders.py` maps a checkpoint's config onto them.
"""

from __future__ import annotations

import math
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
    # The switches of other decoder layouts; the defaults are the zoo's plain one.
    qkv_bias: bool = False  # biases on the q, k and v projections (Qwen2, GPT-2)
    out_bias: bool = False  # a bias on the attention output projection (GPT-2)
    mlp_bias: bool = False
    mlp: str = "swiglu"  # or "gelu": two linears around GELU (GPT-2)
    gelu: str = "tanh"  # the GELU of a "gelu" MLP: "tanh" (gelu_new) or "erf" (exact)
    norm: str = "rms"  # or "layer": LayerNorm with a bias (GPT-2)
    positions: str = "rope"  # or "learned": an absolute position embedding table (GPT-2)
    rope_scaling: tuple[tuple[str, float | str], ...] = ()  # rope_type and its parameters, as the config says
    sliding_window: int | None = None  # attend to the last this-many tokens only (Mistral)
    sliding_layers: tuple[int, ...] | None = None  # the layers with the window (None: every layer)
    explicit_head_dim: int | None = None  # a head size other than dim // n_heads

    @property
    def head_dim(self) -> int:
        return self.explicit_head_dim or self.dim // self.n_heads

    @property
    def plain(self) -> bool:
        """The zoo's layout, which the methods that re-run the decoder's layers themselves assume."""
        return self == LMConfig(**{**self.__dict__, **_PLAIN_LAYOUT})

    @property
    def parameter_count(self) -> int:
        """What `count_parameters(DecoderLM(self))` returns, without building the model."""
        attention = self.dim * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        attention += self.qkv_bias * self.head_dim * (self.n_heads + 2 * self.n_kv_heads) + self.out_bias * self.dim
        mlp = (2 if self.mlp == "gelu" else 3) * self.dim * self.ffn_dim
        mlp += self.mlp_bias * (self.ffn_dim * (1 if self.mlp == "gelu" else 2) + self.dim)
        norm = (2 if self.norm == "layer" else 1) * self.dim
        head = 0 if self.tie_embeddings else self.vocab_size * self.dim
        positions = self.max_seq_len * self.dim if self.positions == "learned" else 0
        return self.vocab_size * self.dim + positions + self.n_layers * (attention + mlp + 2 * norm) + norm + head


_PLAIN_LAYOUT = {
    "qkv_bias": False,
    "out_bias": False,
    "mlp_bias": False,
    "mlp": "swiglu",
    "norm": "rms",
    "positions": "rope",
    "rope_scaling": (),
    "sliding_window": None,
    "sliding_layers": None,
    "explicit_head_dim": None,
}


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


def scaled_frequencies(config: LMConfig) -> tuple[torch.Tensor, float]:
    """The rotary inverse frequencies under the config's RoPE scaling, and the factor cos and sin are
    multiplied by (YaRN's attention scaling; 1 otherwise). The formulas are the papers' (linear
    position interpolation, Llama 3.1's frequency-band smoothing, YaRN's ramp), as transformers
    computes them, so a checkpoint trained with one runs as it was trained."""
    head_dim, scaling = config.head_dim, dict(config.rope_scaling)
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    kind, factor = scaling.get("rope_type", "default"), float(scaling.get("factor", 1.0))
    if kind == "linear":
        return inv_freq / factor, 1.0
    if kind == "llama3":
        original = float(scaling["original_max_position_embeddings"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        wavelength = 2 * math.pi / inv_freq
        smooth = ((original / wavelength - low) / (high - low)).clamp(0, 1)  # 0 below the band, 1 above it
        scaled = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        return torch.where(wavelength > original / low, inv_freq / factor, scaled), 1.0
    if kind == "yarn":
        return _yarn(inv_freq, head_dim, config.rope_theta, factor, scaling)
    return inv_freq, 1.0


def _yarn(
    inv_freq: torch.Tensor, head_dim: int, theta: float, factor: float, scaling: dict
) -> tuple[torch.Tensor, float]:
    """YaRN: frequencies that turn often within the original context keep their value, slow ones are
    interpolated by `factor`, a linear ramp between; cos and sin are scaled up by ~0.1 ln(factor) + 1."""
    original = float(scaling["original_max_position_embeddings"])
    fast, slow = float(scaling.get("beta_fast") or 32), float(scaling.get("beta_slow") or 1)

    def dimension(rotations: float) -> float:  # the dimension that turns `rotations` times in the original context
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dimension(fast), dimension(slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / max(high - low, 1e-3)).clamp(0, 1)

    def mscale(scale: float, weight: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * weight * math.log(scale) + 1.0

    attention = scaling.get("attention_factor")
    if attention is None:
        weight, weight_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if weight and weight_all:
            attention = mscale(factor, float(weight)) / mscale(factor, float(weight_all))
        else:
            attention = mscale(factor)
    return inv_freq / factor * ramp + inv_freq * (1 - ramp), float(attention)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.wq = nn.Linear(config.dim, config.n_heads * self.head_dim, bias=config.qkv_bias)
        self.wk = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=config.qkv_bias)
        self.wv = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=config.qkv_bias)
        self.wo = nn.Linear(config.n_heads * self.head_dim, config.dim, bias=config.out_bias)

    def forward(
        self, x, cos, sin, layer_cache: tuple[torch.Tensor, torch.Tensor] | None, start: int, mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, steps, _ = x.shape
        q = self.wq(x).view(batch, steps, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if cos is not None:  # None: positions were added to the input (learned embeddings)
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
        self.w1 = nn.Linear(config.dim, config.ffn_dim, bias=config.mlp_bias)  # gate
        self.w3 = nn.Linear(config.dim, config.ffn_dim, bias=config.mlp_bias)  # up
        self.w2 = nn.Linear(config.ffn_dim, config.dim, bias=config.mlp_bias)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class GeluFeedForward(nn.Module):
    """GPT-2's MLP: up, GELU, down (no gate)."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.approximate = "tanh" if config.gelu == "tanh" else "none"
        self.w1 = nn.Linear(config.dim, config.ffn_dim, bias=config.mlp_bias)  # up
        self.w2 = nn.Linear(config.ffn_dim, config.dim, bias=config.mlp_bias)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x), approximate=self.approximate))


def _norm(config: LMConfig) -> nn.Module:
    return (
        nn.LayerNorm(config.dim, eps=config.norm_eps)
        if config.norm == "layer"
        else RMSNorm(config.dim, config.norm_eps)
    )


class Block(TransformerBlock):
    attention: Attention
    feed_forward: FeedForward

    def __init__(self, config: LMConfig):
        super().__init__()
        self.attention_norm = _norm(config)
        self.attention = Attention(config)
        self.ffn_norm = _norm(config)
        # The type says SwiGLU: the methods that reach into w3 accept only the plain layout (LMConfig.plain).
        self.feed_forward = cast(FeedForward, GeluFeedForward(config) if config.mlp == "gelu" else FeedForward(config))

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
        if config.positions == "learned":
            self.pos_embeddings = nn.Embedding(config.max_seq_len, config.dim)
        self.layers = cast("BlockList[Block]", nn.ModuleList(Block(config) for _ in range(config.n_layers)))
        self.norm = _norm(config)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        # Small embedding init: with tied output weights, N(0, 1) would start at huge logits.
        nn.init.normal_(self.tok_embeddings.weight, std=0.02)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self._scaled_rope = scaled_frequencies(config) if config.rope_scaling else None

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
        cos, sin = self.rotary(positions)
        mask = _attention_mask(start, steps, tree_mask, tokens.device)
        window = self.config.sliding_window
        windowed = (
            mask if window is None or start + steps <= window else _windowed(mask, positions, start, steps, window)
        )
        x = self.tok_embeddings(tokens) if embeddings is None else embeddings
        if self.config.positions == "learned":
            x = x + self.pos_embeddings(positions)
        sliding = self.config.sliding_layers
        for index, layer in enumerate(self.layers):
            if index in skip_layers:
                continue
            layer_cache = (cache.keys[index], cache.values[index]) if cache is not None else None
            x = layer(x, cos, sin, layer_cache, start, windowed if sliding is None or index in sliding else mask)
        if cache is not None:
            cache.length = start + steps
        hidden = self.norm(x)
        logits = self.output(hidden).float()
        return (logits, hidden) if return_hidden else logits

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """cos and sin for these positions: plain RoPE, the config's scaled RoPE, or none (learned positions)."""
        if self.config.positions == "learned":
            return None, None
        if self._scaled_rope is None:
            return rotary(positions, self.config.head_dim, self.config.rope_theta)
        inv_freq, factor = self._scaled_rope
        angles = positions.to(torch.float32)[:, None] * inv_freq.to(positions.device)[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos() * factor, angles.sin() * factor


def _attention_mask(
    start: int, steps: int, tree_mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    """None where SDPA's own causal flag is exact (no prefix, or a single new token)."""
    if tree_mask is None and (start == 0 or steps == 1):
        return None
    new = tree_mask if tree_mask is not None else torch.ones(steps, steps, dtype=torch.bool, device=device).tril()
    prefix = torch.ones(steps, start, dtype=torch.bool, device=device)
    return torch.cat((prefix, new.to(device=device, dtype=torch.bool)), dim=1)


def _windowed(mask: torch.Tensor | None, positions: torch.Tensor, start: int, steps: int, window: int) -> torch.Tensor:
    """The attention mask with keys more than `window` - 1 positions behind each query dropped."""
    if mask is None:
        mask = torch.ones(steps, start + steps, dtype=torch.bool, device=positions.device).tril(start)
    keys = torch.arange(start + steps, device=positions.device)
    return mask & (keys[None, :] > positions[:, None] - window)


def decoder_of(model: nn.Module) -> DecoderLM:
    """An lm-family model (a bundle's, a runner's) as the DecoderLM it is under any compile wrapper."""
    decoder = unwrap(model)
    assert isinstance(decoder, DecoderLM), f"an lm-family model is a DecoderLM, not {type(decoder).__name__}"
    return decoder


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
