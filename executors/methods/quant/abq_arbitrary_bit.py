"""`quant.abq_arbitrary_bit`: ABQ-LLM arbitrary-bit post-training quantisation (W2…W8 × A8/A16).

Paper: Zeng et al., "ABQ-LLM: Arbitrary-Bit Quantized Inference Acceleration for Large Language
Models" (arXiv 2408.08554); mechanism as in its text and the authors' calibration code:

- Block-wise calibration (OmniQuant lineage): the transformer blocks are calibrated one after
  another on calibration windows; the quantised model's block input is the previous quantised
  block's output. Learned per block: per-group weight clipping factors (sigmoid-scaled min/max,
  "LWC") for every linear, and on the MLP down projection of the first three and last four
  blocks a rank-1 compensation ``W + a·bᵀ`` (the paper finds down_proj the most sensitive).
- Distribution correction: the block's quantised output is pulled toward two full-precision
  targets — the FP block on the FP input and the FP block on the quantised input — by MSE plus
  −log cosine similarity to each, and the quantised attention map toward the FP one by a
  two-sided KL divergence (quantisation destroys the attention sink on the first token).
- Bit balance: INT2's asymmetric levels {-2,-1,0,1} get a fifth level, {-2,…,2}, symmetric
  about the zero point. Five levels do not fit two bits: this executor stores such weights as
  3-bit codes and records `storage_bits` = 3 (the kernels have no fractional widths).
- A8: activations are quantised per token, dynamically, asymmetric, before every linear.

Blocks are driven through the arguments caught at the first block's input (the authors'
"Catcher"), so the same calibration runs on the zoo's decoder LMs and on the all-MiniLM-L6-v2
encoder (post-LN BERT blocks, bidirectional attention maps). Deviation: the rank-1
compensation's left factor is learned in units of its row's mean |w| (with the authors' absolute
units and lr, Adam's first steps wrecked MiniLM's small weights: embedding cosine 0.36).

Deployed weights are packed in `accel_kernels.quant_pack`'s format (bit planes for 3/5/6/7 bits,
byte-aligned streams for 2/4/8). On CUDA `accel_kernels.dispatch.lowbit_linear` runs the Triton
any-bit GEMM; on CPU each call dequantises the packed codes and does an fp32 matmul — exact in
quality, slower than fp32 (expect a speed-up below 1; this is a quality/memory method on CPU).
A8 activations are fake-quantised on both devices (the kernels read fp16 activations).
Calibration is seeded and cached as safetensors keyed by the model's weights and the config.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from accel_kernels.dispatch import backend_for, lowbit_linear
from accel_kernels.lowbit_gemm import ALIGNED_BITS
from accel_kernels.quant_pack import PackedWeight
from executors.caching import cached_tensors
from executors.families import default_runner, family_hook
from executors.methods.quant.fakequant import (
    fake_quant_per_token,
    fake_quant_weight,
    levels,
    pack_grid,
    weight_grid,
)
from executors.registry import Method, MethodConfig, TransformerBlock, register_method, transformer_blocks
from executors.training import Schedule, train

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the meaning of the cached tensors changes (2: `left` in row-scale units)
CLIP_INIT = 4.0  # sigmoid(4) ≈ 0.98: clipping starts just inside min/max, as in the authors' code


@dataclass(frozen=True)
class ABQConfig(MethodConfig):
    w_bits: int = 4  # 2..8
    a_bits: int = 16  # 8 (per-token dynamic) or 16 (weight-only)
    group_size: int = 64
    calibration_windows: int = 16
    calibration_len: int = 128
    epochs: int = 5  # passes over the calibration windows per block
    batch: int = 2
    lr_clip: float = 1e-2
    lr_compensation: float = 1e-2
    bit_balance: bool = True  # only changes W2
    seed: int = 0
    version: int = 1


class LowBitLinear(nn.Module):
    """A linear layer stored as packed 2..8-bit codes (+ per-group scales and zero points)."""

    packed: torch.Tensor  # buffers, registered in __init__
    scales: torch.Tensor
    zeros: torch.Tensor

    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None, a_bits: int):
        super().__init__()
        self.bits, self.group_size, self.layout = packed.bits, packed.group_size, packed.layout
        self.out_features, self.in_features, self.a_bits = packed.out_features, packed.in_features, a_bits
        self.register_buffer("packed", packed.packed)
        self.register_buffer("scales", packed.scales)
        self.register_buffer("zeros", packed.zeros)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def packed_weight(self) -> PackedWeight:
        return PackedWeight(
            self.packed,
            self.scales,
            self.zeros,
            self.bits,
            self.group_size,
            self.out_features,
            self.in_features,
            self.layout,
        )

    def dequantized(self) -> torch.Tensor:
        """CPU path: uint8 shifts and masks over whole bytes (the packing is little-endian, low bits
        first), so a call costs a few passes over the packed weight, not one int32 tensor per bit."""
        shifts = torch.arange(0, 8, 1 if self.layout == "planes" else self.bits, dtype=torch.uint8)
        if self.layout == "planes":
            planes = self.packed.view(self.out_features, self.bits, -1)
            bits = (planes[..., None] >> shifts) & 1  # [N, bits, bytes, 8]
            weights = (1 << torch.arange(self.bits, dtype=torch.uint8))[:, None, None]
            codes = (bits * weights).sum(1, dtype=torch.uint8).reshape(self.out_features, -1)
        else:
            codes = ((self.packed[..., None] >> shifts) & ((1 << self.bits) - 1)).reshape(self.out_features, -1)
        groups = self.scales.shape[1]
        padded = groups * self.group_size  # ragged last group: padded codes are cut off again below
        codes = F.pad(codes[:, : self.in_features], (0, padded - self.in_features)).view(self.out_features, groups, -1)
        weight = (codes.float() - self.zeros.float()[..., None]) * self.scales.float()[..., None]
        return weight.view(self.out_features, padded)[:, : self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fake_quant_per_token(x, self.a_bits)
        if x.is_cuda:
            return lowbit_linear(x, self.packed_weight(), self.bias)
        return F.linear(x, self.dequantized(), self.bias)


class CalibLinear(nn.Module):
    """A frozen linear with ABQ's learnable clipping (and optional rank-1 compensation)."""

    def __init__(self, linear: nn.Linear, config: ABQConfig, compensate: bool):
        super().__init__()
        self.config = config
        self.weight = linear.weight.detach()
        self.bias = None if linear.bias is None else linear.bias.detach()
        out_features, in_features = self.weight.shape
        groups = -(-in_features // min(config.group_size, in_features))
        device = self.weight.device
        self.upper = nn.Parameter(torch.full((out_features, groups), CLIP_INIT, device=device))
        self.lower = nn.Parameter(torch.full((out_features, groups), CLIP_INIT, device=device))
        self.left = nn.Parameter(torch.zeros(out_features, 1, device=device)) if compensate else None
        self.right = nn.Parameter(torch.ones(1, in_features, device=device)) if compensate else None
        # `left` counts in units of its row's mean |w|: Adam's first steps move a parameter by ~lr
        # whatever its gradient, which at lr 1e-2 in absolute units wrecks rows of small weights.
        self.row_scale = self.weight.abs().mean(dim=1, keepdim=True)

    def effective_weight(self) -> torch.Tensor:
        if self.left is None or self.right is None:  # both or neither: `compensate`
            return self.weight
        return self.weight + (self.left * self.row_scale) @ self.right

    def grid(self, weight: torch.Tensor):
        c = self.config
        return weight_grid(
            weight, c.w_bits, c.group_size, bit_balance=c.bit_balance, upper=self.upper, lower=self.lower
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.effective_weight()
        quantized = fake_quant_weight(weight, self.grid(weight))
        return F.linear(fake_quant_per_token(x, self.config.a_bits), quantized, self.bias)

    def freeze(self) -> LowBitLinear:
        with torch.no_grad():
            weight = self.effective_weight()
            grid = self.grid(weight)
            layout = "stream" if grid.storage_bits in ALIGNED_BITS else "planes"
            return LowBitLinear(pack_grid(weight, grid, layout), self.bias, self.config.a_bits)


def compensated(index: int, n_layers: int) -> bool:
    """The paper's rule: down_proj of the first three and the last four blocks."""
    return index <= 2 or index >= n_layers - 4


def block_linears(block: TransformerBlock) -> list[tuple[nn.Module, str]]:
    return [
        (parent, name)
        for parent in (block.attention, block.feed_forward)
        for name, child in parent.named_children()
        if isinstance(child, (nn.Linear, CalibLinear))
    ]


def block_inputs(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """The first block's input and its other arguments (positions, mask), caught on the way in —
    the authors' "Catcher": one code path for the decoder and the encoder."""
    caught = {}

    def catch(module, args):
        caught["args"] = args
        raise StopIteration

    hook = transformer_blocks(model)[0].register_forward_pre_hook(catch)
    try:
        with torch.no_grad():
            model(tokens)
    except StopIteration:
        pass
    finally:
        hook.remove()
    x, *rest = caught["args"]
    return x, tuple(rest)


def rows_of(rest: tuple, rows: torch.Tensor) -> tuple:
    """The block arguments of a sub-batch: only per-sequence masks [B, 1, 1, T] have a batch axis."""
    return tuple(a[rows] if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in rest)


def attention_probs(block: TransformerBlock, x: torch.Tensor, rest: tuple) -> torch.Tensor:
    """The block's attention map [B, H, T, T]: each family's block computes its own (causal + RoPE
    for a decoder, padding-masked for an encoder)."""
    return block.attention_map(x, *rest)


def correction_loss(out, fp_out, fp_out_on_quant_input, probs, fp_probs) -> torch.Tensor:
    """ABQ's distribution correction: two FP targets (MSE and −log cos each) + two-sided attention KL."""
    loss = F.mse_loss(out, fp_out) + F.mse_loss(out, fp_out_on_quant_input)
    for target in (fp_out, fp_out_on_quant_input):
        loss = loss - torch.log(F.cosine_similarity(out, target, dim=-1).mean().abs().clamp_min(1e-6))
    log_p, log_fp = probs.clamp_min(1e-12).log(), fp_probs.clamp_min(1e-12).log()
    kl_fp_q = (fp_probs * (log_fp - log_p)).sum(-1).mean()
    kl_q_fp = (probs * (log_p - log_fp)).sum(-1).mean()
    return loss + kl_fp_q + kl_q_fp


def calibrate_block(block, index, n_layers, config, fp_in, quant_in, rest, generator) -> dict:
    """Swaps the block's linears for CalibLinears, fits them; returns the learned tensors."""
    with torch.no_grad():
        fp_out = block(fp_in, *rest)
        fp_out_on_quant = block(quant_in, *rest)
        fp_probs = attention_probs(block, fp_in, rest)
    for parent, name in block_linears(block):
        compensate = name == "w2" and compensated(index, n_layers)
        setattr(parent, name, CalibLinear(getattr(parent, name), config, compensate))
    clip = [p for n, p in block.named_parameters() if n.endswith(("upper", "lower"))]
    comp = [p for n, p in block.named_parameters() if n.endswith(("left", "right"))]
    groups = [{"params": clip, "lr": config.lr_clip}, {"params": comp, "lr": config.lr_compensation}]
    batches_per_epoch = -(-len(fp_in) // config.batch)
    order: list[torch.Tensor] = []

    def step_loss(step: int, gen: torch.Generator) -> torch.Tensor:
        if step % batches_per_epoch == 0:  # a new epoch: a new seeded order over the windows
            order[:] = [torch.randperm(len(fp_in), generator=gen).to(fp_in.device)]
        start = step % batches_per_epoch * config.batch
        rows = order[0][start : start + config.batch]
        out = block(quant_in[rows], *rows_of(rest, rows))
        probs = attention_probs(block, quant_in[rows], rows_of(rest, rows))
        return correction_loss(out, fp_out[rows], fp_out_on_quant[rows], probs, fp_probs[rows])

    result = train(groups, step_loss, Schedule(config.lr_clip, config.epochs * batches_per_epoch, decay="constant"),
                   seed=config.seed, generator=generator, log_every=0)  # fmt: skip
    if result.losses:
        log.info("abq block %d: final loss %.4f", index, result.last_loss)
    return {
        f"{index}.{n}": p.detach().clone()
        for n, p in block.named_parameters()
        if n.endswith(("upper", "lower", "left", "right"))
    }


def freeze_block(block: TransformerBlock) -> None:
    for parent, name in block_linears(block):
        setattr(parent, name, getattr(parent, name).freeze())


def quantize_abq(
    model: nn.Module, tokens: torch.Tensor, config: ABQConfig, learned: dict | None = None
) -> tuple[nn.Module, dict]:
    """A packed low-bit copy of `model`; `learned` (from the cache) skips the optimisation."""
    quantized = copy.deepcopy(model)
    for p in quantized.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(config.seed)
    fp_in, rest = block_inputs(model, tokens)
    quant_in, found = fp_in.clone(), {}
    originals, blocks = transformer_blocks(model), transformer_blocks(quantized)
    n_layers = len(blocks)
    for index, block in enumerate(blocks):
        if learned is None:
            found.update(calibrate_block(block, index, n_layers, config, fp_in, quant_in, rest, generator))
        else:
            for parent, name in block_linears(block):
                compensate = name == "w2" and compensated(index, n_layers)
                setattr(parent, name, CalibLinear(getattr(parent, name), config, compensate))
            block.load_state_dict(
                {k.split(".", 1)[1]: v for k, v in learned.items() if k.split(".", 1)[0] == str(index)}, strict=False
            )
        with torch.no_grad():
            fp_in = originals[index](fp_in, *rest)  # the untouched FP block
            freeze_block(block)
            quant_in = block(quant_in, *rest)
    return quantized, found


def stored_bits_per_weight(model: nn.Module) -> float:
    """Bits the low-bit layers store per weight: packed codes plus their fp16 scales and zero points."""
    layers = [m for m in model.modules() if isinstance(m, LowBitLinear)]
    stored = sum(8 * (m.packed.numel() + 2 * m.scales.numel() + 2 * m.zeros.numel()) for m in layers)
    return stored / max(1, sum(m.in_features * m.out_features for m in layers))


def calibration_tokens(bundle, config: ABQConfig) -> torch.Tensor:
    """Training-split windows from the bundle's family (next-token text, [CLS] … [SEP] windows, …)."""
    length = min(config.calibration_len, bundle.model.config.max_seq_len)
    calibration = family_hook(bundle, "calibration")
    assert calibration is not None, "supports() requires the family's calibration hook"
    tokens = calibration(bundle, config.calibration_windows, length, config.seed)
    return tokens.to(bundle.model.tok_embeddings.weight.device)


def prepare_abq(bundle, config: ABQConfig) -> tuple[nn.Module, float, bool]:
    """The quantised model from cached calibration, or calibrated now (then cached)."""
    model = bundle.model
    tokens = calibration_tokens(bundle, config)
    if len(tokens) == 0:
        raise ValueError(f"quant.abq_arbitrary_bit: no calibration text of {config.calibration_len} tokens")
    quantized: list[nn.Module] = []

    def build():
        torch.manual_seed(config.seed)
        with torch.inference_mode(False), torch.enable_grad():  # a caller may hold inference mode
            made, learned = quantize_abq(model, tokens, config)
        quantized.append(made)
        return learned, {}

    cached = cached_tensors("abq", model, {**asdict(config), "format": CACHE_FORMAT}, build)
    if cached.hit:
        made, _ = quantize_abq(model, tokens, config, cached.tensors)
        return made, cached.build_s, True
    return quantized[0], cached.build_s, False


@register_method(
    "quant.abq_arbitrary_bit",
    ABQConfig,
    category="quantization",
    families=("lm", "encoder"),
    changes=("weights", "weight_bytes", "outputs"),
    paper="ABQ-LLM: Arbitrary-Bit Quantized Inference Acceleration for Large Language Models",
    arxiv="2408.08554",
    catalogue_row=14,
    lossless=False,
)
class ABQArbitraryBit(Method):
    order = 10  # a weight transform: before compilation and decoding strategies
    composes_with = frozenset({"baseline", "lm.spec.swift", "lm.spec.medusa", "lm.parallel.jacobi"})
    requirements = {"devices": ["cpu", "cuda"], "triton_on_cuda": True}

    def supports(self, bundle, device):
        if "transformer_blocks" not in bundle.capabilities or family_hook(bundle, "calibration") is None:
            return (
                "ABQ's distribution correction calibrates transformer blocks against their attention maps; "
                "this model declares no such blocks or no calibration windows"
            )
        if not bundle.calibration_texts:
            return "needs calibration text"
        return None

    def apply(self, bundle, config):
        if not 2 <= config.w_bits <= 8 or config.a_bits not in (8, 16):
            raise ValueError("quant.abq_arbitrary_bit: w_bits must be 2..8 and a_bits 8 or 16")
        quantized, calibration_s, cached = prepare_abq(bundle, config)  # own windows: size is a knob
        backend, reason = backend_for(bundle.model.tok_embeddings.weight.device)
        codes = levels(config.w_bits, config.bit_balance) + 1
        storage_bits = max(2, (codes - 1).bit_length())
        return default_runner(
            bundle,
            quantized,
            {
                "w_bits": config.w_bits,
                "a_bits": config.a_bits,
                "storage_bits": storage_bits,
                # what the figures mean by "W2": bit balance gives INT2 five levels, log2(5) ≈ 2.32 bits
                # of information stored in 3-bit codes; bits_per_weight adds the fp16 scale and zero per group
                "levels": codes,
                "effective_bits": round(math.log2(codes), 3),
                "bits_per_weight": round(stored_bits_per_weight(quantized), 3),
                "group_size": config.group_size,
                "calibration_s": round(calibration_s, 3),
                "calibration_cached": cached,
                "kernel_backend": backend if backend == "triton" else "unpack + dequantize + fp32 matmul",
                "kernel_backend_reason": reason,
                "activation_quant": "per-token dynamic fake quant" if config.a_bits < 16 else "none",
            },
        )
