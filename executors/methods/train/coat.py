"""`train.memory.coat_fp8`: COAT (Xi et al., "COAT: Compressing Optimizer States and Activation for
Memory-Efficient FP8 Training", ICLR 2025) — Adam's two moments and the activations autograd keeps
for backward stored in FP8 (E4M3), per group of `group_size` values with their own scale.

Dynamic range expansion (the paper's §4): a group's values span a far smaller range than E4M3's
(448 / 2⁻⁹ ≈ 2.3 × 10⁵), so most codes go unused; each group is first mapped through
f(x) = sign(x)·|x|^k with k = log(R_E4M3) / log(max|x| / min|x|), which stretches its range onto
the format's, then scaled so its largest value is 448; dequantising inverts both. Moments are
dequantised to float32 for the update and requantised after it.

Activations: every floating tensor autograd saves (weights excluded) is stored per group in E4M3
and dequantised when backward needs it. The paper quantises linear-layer inputs per tensor (for
its FP8 matrix multiplies) and non-linear layers' per group; no FP8 matrix multiply runs here, so
every saved tensor is per group. On a CPU, float8 is a storage type only: the memory saved is
real, the speed is not (each step pays the casts); on CUDA the same holds without FP8 GEMMs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from executors.families.training.engine import Plan, trainer
from executors.registry import Method, MethodConfig, bounded, register_method

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
FP8_RANGE = math.log(FP8_MAX / 2**-9)  # log of E4M3's dynamic range, subnormals included


@dataclass(frozen=True)
class Packed:
    codes: torch.Tensor  # float8, [groups, group_size]
    scale: torch.Tensor  # float32, [groups, 1]: the group's largest magnitude
    exponent: torch.Tensor | None  # float32, [groups, 1]: the expansion's k (None: no expansion)
    shape: torch.Size
    dtype: torch.dtype

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.codes, self.scale, self.exponent) if t is not None]


def quantize(x: torch.Tensor, group_size: int, expand: bool) -> Packed:
    flat = x.detach().reshape(-1).float()
    groups = flat.new_zeros(math.ceil(flat.numel() / group_size) * group_size)
    groups[: flat.numel()] = flat
    groups = groups.view(-1, group_size)
    largest = groups.abs().amax(1, keepdim=True).clamp(min=1e-30)
    groups = groups / largest  # in [-1, 1]: the power below cannot underflow
    exponent = None
    if expand:
        magnitude = groups.abs()
        smallest = torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude)).amin(1, keepdim=True)
        spread = -torch.log(smallest)  # log(max / min) of the group
        # A group narrower than E4M3 is stretched onto its range (k > 1); a constant group keeps k = 1.
        exponent = torch.where(spread > 1e-6, FP8_RANGE / spread.clamp(min=1e-6), torch.ones_like(spread))
        groups = groups.sign() * magnitude.pow(exponent)
    return Packed((groups * FP8_MAX).to(FP8), largest, exponent, x.shape, x.dtype)


def dequantize(packed: Packed) -> torch.Tensor:
    groups = packed.codes.float() / FP8_MAX
    if packed.exponent is not None:
        groups = groups.sign() * groups.abs().pow(1 / packed.exponent)
    groups = groups * packed.scale
    numel = math.prod(packed.shape)
    return groups.reshape(-1)[:numel].reshape(packed.shape).to(packed.dtype)


class FP8AdamW(torch.optim.Optimizer):
    """AdamW whose moments are stored as FP8 groups between steps (master weights stay float32)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0, *,
                 group_size: int = 128, expand: bool = True):  # fmt: skip
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self.group_size, self.expand = group_size, expand

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                step = state.get("step", 0) + 1
                m = _load(state, "m", p) if step > 1 else torch.zeros_like(p)
                v = _load(state, "v", p) if step > 1 else torch.zeros_like(p)
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                denom = (v / (1 - beta2**step)).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - beta1**step))
                state["step"] = step
                _store(state, "m", quantize(m, self.group_size, self.expand))
                _store(state, "v", quantize(v, self.group_size, self.expand))
        return None


def _store(state: dict, name: str, packed: Packed) -> None:
    """The state holds only the codes, scales and exponents (what the memory figures count)."""
    state[f"{name}_codes"], state[f"{name}_scale"] = packed.codes, packed.scale
    if packed.exponent is not None:
        state[f"{name}_exponent"] = packed.exponent


def _load(state: dict, name: str, like: torch.Tensor) -> torch.Tensor:
    packed = Packed(
        state[f"{name}_codes"], state[f"{name}_scale"], state.get(f"{name}_exponent"), like.shape, like.dtype
    )
    return dequantize(packed)


def saved_in_fp8(group_size: int) -> tuple[Any, Any]:
    """(pack, unpack) for saved_tensors_hooks: floating activations kept as FP8 groups."""

    def pack(tensor: torch.Tensor) -> Any:
        if not tensor.is_floating_point() or tensor.numel() < group_size or (tensor.requires_grad and tensor.is_leaf):
            return tensor  # indices, masks, tiny tensors and the weights themselves stay as they are
        packed = quantize(tensor, group_size, expand=False)
        return (packed, *packed.tensors())

    def unpack(saved: Any) -> torch.Tensor:
        return dequantize(saved[0]) if isinstance(saved, tuple) else saved

    return pack, unpack


@dataclass(frozen=True)
class CoatConfig(MethodConfig):
    group_size: int = bounded(128, 16, 4096)
    expand: bool = True  # dynamic range expansion of the moments
    activations: bool = True  # FP8 saved activations as well as optimizer states
    version: int = 1


@register_method(
    "train.memory.coat_fp8",
    CoatConfig,
    category="memory",
    families=("training",),
    changes=("outputs", "train_memory"),
    paper="COAT: Compressing Optimizer States and Activation for Memory-Efficient FP8 Training",
    arxiv="2410.19313",
    catalogue_row=87,
    phase="training",
)
class Coat(Method):
    def apply(self, bundle, config):
        def make(groups, schedule):
            return FP8AdamW(groups, schedule.lr, schedule.betas, weight_decay=schedule.weight_decay,
                            group_size=config.group_size, expand=config.expand)  # fmt: skip

        plan = Plan(
            "COAT",
            optimizer=make,
            saved=saved_in_fp8(config.group_size) if config.activations else None,
            notes={
                "group_size": config.group_size,
                "expand": config.expand,
                "activations": config.activations,
                "float8": "storage only: the memory saved is real, the speed is not (no FP8 matrix multiply)",
            },
        )
        return trainer(bundle, config, plan)
