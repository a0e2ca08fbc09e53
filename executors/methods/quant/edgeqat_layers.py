"""EdgeQAT's trainable and deployed layers: LSQ linears, q/k/v grids, token-adaptive bit widths.

`build_student` turns a decoder into the QAT student (or, unquantised, the teacher whose attention
maps the distribution loss matches); `deploy` freezes a trained student into int8 kernels or packed
low-bit weights. The method, its losses and its training are in `edgeqat.py`.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from accel_kernels.lowbit_gemm import ALIGNED_BITS
from executors.families.lm.model import Attention, DecoderLM, apply_rotary
from executors.methods.quant.abq_arbitrary_bit import LowBitLinear
from executors.methods.quant.fakequant import SCALE_DTYPE, WeightGrid, absmax_step, lsq, pack_grid
from executors.methods.quant.int8_outlier import OutlierInt8Linear
from executors.methods.quant.token_bits import TokenBits, importance, mixed_fake_quant

if TYPE_CHECKING:
    from executors.methods.quant.edgeqat import EdgeQATConfig


class QATLinear(nn.Module):
    """Trainable weight with an LSQ step per output channel; input fake-quantised (token-adaptive bits).

    `role` says which importance mask its input follows: "previous" (a block's attention input
    follows the block before), "current" (its own block's MLP) or None (always `a_bits`)."""

    def __init__(self, linear: nn.Linear, config: EdgeQATConfig, bits: TokenBits, role: str | None):
        super().__init__()
        self.w_bits, self.a_bits, self.a_low_bits = config.w_bits, config.a_bits, config.a_low_bits
        self.per_token, self.fp16_steps = config.per_token_activations, not config.int8_kernels
        self.token_bits, self.role = bits, role
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        self.step = nn.Parameter(absmax_step(self.weight, config.w_bits, dim=1))

    def weight_step(self) -> torch.Tensor:
        """The step as deployed: packed low-bit weights store fp16 scales, so training rounds through fp16."""
        step = self.step.clamp_min(1e-8)
        return step + (step.to(SCALE_DTYPE).float() - step).detach() if self.fp16_steps else step

    def quantized_weight(self) -> torch.Tensor:
        return lsq(self.weight, self.weight_step()[:, None], self.w_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.token_bits.mask(self.role)
        x = mixed_fake_quant(x, self.a_bits, self.a_low_bits, low, self.per_token)
        return F.linear(x, self.quantized_weight(), self.bias)

    def to_int8(self) -> nn.Module:
        """torch's dynamic int8 Linear holding exactly the trained codes and steps."""
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

        if self.w_bits != 8:
            raise ValueError("the CPU int8 kernels deploy 8-bit weights only")
        out_features, in_features = self.weight.shape
        layer = DynamicInt8Linear(in_features, out_features, bias_=False, dtype=torch.qint8)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensors warn they are deprecated; the kernels work
            qweight = torch.quantize_per_channel(
                self.weight.detach(),
                self.step.detach().double(),
                torch.zeros(out_features, dtype=torch.long),
                0,
                torch.qint8,
            )
            layer.set_weight_bias(qweight, None)
        bias = None if self.bias is None else self.bias.detach().clone()
        return OutlierInt8Linear(layer, bias, None, self.per_token)

    def to_low_bit(self) -> nn.Module:
        """The trained grid packed at `w_bits` behind the same input quantisation (exact)."""
        with torch.no_grad():
            out_features, in_features = self.weight.shape
            zero = torch.full((out_features, 1), float(2 ** (self.w_bits - 1)))
            grid = WeightGrid(self.weight_step()[:, None], zero, 2**self.w_bits - 1, in_features)
            layout = "stream" if grid.storage_bits in ALIGNED_BITS else "planes"
            packed = LowBitLinear(pack_grid(self.weight.detach(), grid, layout), self.bias, a_bits=16)
        return DeployedLowBitLinear(packed, self)


class DeployedLowBitLinear(nn.Module):
    """Packed low-bit weights (dequantised per call on CPU) after the token-adaptive input quantisation."""

    def __init__(self, packed: nn.Module, trained: QATLinear):
        super().__init__()
        self.packed = packed
        self.a_bits, self.a_low_bits, self.per_token = trained.a_bits, trained.a_low_bits, trained.per_token
        self.token_bits, self.role = trained.token_bits, trained.role

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.token_bits.mask(self.role)
        return self.packed(mixed_fake_quant(x, self.a_bits, self.a_low_bits, low, self.per_token))


class QATAttention(Attention):
    """The decoder's attention with q/k/v on learned low-bit grids; scores its tokens' importance for the
    token-adaptive widths and can record what the losses need."""

    thresholds: torch.Tensor  # buffer: this layer's importance threshold (calibrated by `init_grids`)

    def __init__(self, attention: Attention, config: EdgeQATConfig, bits: TokenBits, index: int, quantize: bool):
        nn.Module.__init__(self)
        self.n_heads, self.n_kv_heads, self.head_dim = attention.n_heads, attention.n_kv_heads, attention.head_dim
        self.wq, self.wk, self.wv, self.wo = attention.wq, attention.wk, attention.wv, attention.wo
        self.kv_bits = config.kv_bits if quantize else 16
        self.kv_low_bits = config.kv_low_bits if quantize else 16
        self.token_bits, self.index, self.scoring = bits, index, quantize and config.mixed
        self.steps = nn.Parameter(torch.ones(3))  # q, k, v; set from data by `init_grids`
        self.low_steps = nn.Parameter(torch.ones(3))  # the same at kv_low_bits, for the low-importance tokens
        self.register_buffer("thresholds", torch.full((1,), -math.inf))
        self.record = False
        self.recorded: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.observed: list[torch.Tensor] | None = None  # importance scores, while thresholds are calibrated

    def _grid(self, x: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
        if bits >= 16:
            return x
        if torch.is_grad_enabled() and step.requires_grad:
            return lsq(x, step, bits)
        # Deployed: the same grid in one fused op (LSQ's autograd plumbing costs a decode step dearly).
        bound = 2 ** (bits - 1)
        return torch.fake_quantize_per_tensor_affine(x, float(step), 0, -bound, bound - 1)

    def quant(self, x: torch.Tensor, which: int, low: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, heads, T, d] on the learned grid; tokens where `low` [B, T] on the kv_low_bits grid."""
        high = self._grid(x, self.steps[which], self.kv_bits)
        if low is None or self.kv_low_bits >= self.kv_bits or not bool(low.any()):
            return high
        return torch.where(low[:, None, :, None], self._grid(x, self.low_steps[which], self.kv_low_bits), high)

    def forward(self, x, cos, sin, layer_cache, start, mask):
        bits = self.token_bits
        if self.scoring:
            bits.previous, bits.current = (None if self.index == 0 else bits.current), None
        batch, steps, _ = x.shape
        q = self.wq(x).view(batch, steps, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if cos is not None:  # None: positions were added to the input (learned embeddings)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        earlier = bits.mask("previous") if self.scoring else None
        q, k = self.quant(q, 0, earlier), self.quant(k, 1, earlier)
        if self.scoring:
            first_key = k[:, :, 0] if layer_cache is None or start == 0 else layer_cache[0][:, :, 0]
            score = importance(q, first_key)
            if self.observed is not None:
                self.observed.append(score.detach().flatten())
            bits.current = score < self.thresholds
        v = self.quant(v, 2, bits.mask("current") if self.scoring else None)
        if self.record:  # training: explicit attention map for the distribution loss
            keys = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            values = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            causal = torch.ones(steps, steps, dtype=torch.bool, device=x.device).tril()
            probs = (q @ keys.transpose(-1, -2) / self.head_dim**0.5).masked_fill(~causal, float("-inf")).softmax(-1)
            self.recorded = (q, k, probs)
            return self.wo((probs @ values).transpose(1, 2).reshape(batch, steps, -1))
        if layer_cache is not None:  # decoding: the same cache handling as executors.families.lm.model.Attention
            cache_k, cache_v = layer_cache
            cache_k[:, :, start : start + steps] = k
            cache_v[:, :, start : start + steps] = v
            k, v = cache_k[:, :, : start + steps], cache_v[:, :, : start + steps]
        gqa = self.n_heads != self.n_kv_heads
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and steps > 1, enable_gqa=gqa
        )
        return self.wo(out.transpose(1, 2).reshape(batch, steps, -1))


def attention_modules(model: DecoderLM) -> list[QATAttention]:
    return [block.attention for block in model.layers if isinstance(block.attention, QATAttention)]


ROLES = {"wq": "previous", "wk": "previous", "wv": "previous", "wo": None, "w1": "current", "w3": "current",
         "w2": "current"}  # fmt: skip  # which importance mask each linear's input follows (token_bits)


def build_student(model: DecoderLM, config: EdgeQATConfig, quantize_linears: bool = True) -> DecoderLM:
    """A copy whose attention records maps; with `quantize_linears`, every block linear is a QATLinear
    and q/k/v are quantised (without, it is the full-precision teacher)."""
    student = copy.deepcopy(model)
    bits = TokenBits()
    for index, block in enumerate(student.layers):
        if quantize_linears:
            for parent in (block.attention, block.feed_forward):
                for name, child in list(parent.named_children()):
                    if isinstance(child, nn.Linear):
                        role = ROLES.get(name) if config.mixed else None
                        setattr(parent, name, QATLinear(child, config, bits, role))
        block.attention = QATAttention(block.attention, config, bits, index, quantize_linears)
    return student


def init_grids(student: DecoderLM, tokens: torch.Tensor, config: EdgeQATConfig) -> None:
    """Data-driven init of the q/k/v steps (absmax) and of each layer's importance threshold (the
    `low_fraction` quantile of its scores) from forward passes over calibration tokens."""
    captured: dict[nn.Module, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, m=m: captured.__setitem__(m, out))
        for a in attention_modules(student)
        for m in (a.wq, a.wk, a.wv)
    ]
    modules = attention_modules(student)
    with torch.no_grad():
        for module in modules:
            module.observed = []
        student(tokens)
        for hook in hooks:
            hook.remove()
        for attention in modules:
            values = [captured[attention.wq], captured[attention.wk], captured[attention.wv]]
            attention.steps.copy_(torch.stack([absmax_step(v, attention.kv_bits) for v in values]))
            attention.low_steps.copy_(torch.stack([absmax_step(v, min(attention.kv_low_bits, 8)) for v in values]))
        if config.mixed:  # thresholds from the scores of the quantised model (the previous layer's mask unset)
            for attention in modules:
                attention.observed = []
            student(tokens)
            for attention in modules:
                assert attention.observed is not None, "set above"
                attention.thresholds.fill_(torch.cat(attention.observed).quantile(config.low_fraction).item())
    for module in modules:
        module.observed = None


def deploy(student: DecoderLM, config: EdgeQATConfig) -> DecoderLM:
    """QAT linears → int8 kernels (W8A8) or packed low-bit weights; steps become fixed; nothing trainable is left."""
    deployed = copy.deepcopy(student)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager-mode quantized modules warn they are deprecated; they work
        for block in deployed.layers:
            for parent in (block.attention, block.feed_forward):
                for name, child in list(parent.named_children()):
                    if isinstance(child, QATLinear):
                        setattr(parent, name, child.to_int8() if config.int8_kernels else child.to_low_bit())
    for p in deployed.parameters():
        p.requires_grad_(False)
    return deployed
