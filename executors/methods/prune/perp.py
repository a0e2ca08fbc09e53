"""`prune.perp`: magnitude pruning, then retraining only a tiny, expressive parameter subset.

Paper: Zimmer, Andoni, Spiegel, Pokutta, "PERP: Rethinking the Prune-Retrain Paradigm in the
Era of LLMs" (arXiv 2312.15230). Mechanism as the paper states it:

- Prune: per-layer magnitude pruning of every linear layer inside the transformer blocks
  (embeddings and the LM head stay dense, as usual for LLM pruning), unstructured at
  `sparsity`, or semi-structured N:M (`pattern="2:4"`: the N largest of every M consecutive
  input weights stay; sparsity is then 1 − N/M).
- Retrain only a small subset, everything else frozen: `biases` (a zero-initialised bias per
  pruned linear layer — the paper's GPT-style models have their own; our LLaMA-style blocks
  have none, so zero-initialised ones are added), `norms` (the norm layers' parameters), and the
  paper's two LoRA variants
  that merge back without destroying sparsity: `masklora` (W + (BA) ⊙ M — the update is
  masked, so pruned weights stay zero) and `scalelora` (a multiplicative adapter, W ⊙ (1 + BA),
  which cannot revive a zero). Our `scalelora` starts from 1 + BA with B = 0 so training starts
  at the pruned model; the paper's exact initialisation may differ. The paper finds biases +
  norms (0.01–0.05 % of the parameters) enough at moderate sparsity and the LoRA variants
  needed at high sparsity.
- Merge: adapters fold into the weights; the result is a plain DecoderLM with the same zeros.

Speed: on CPU the merged weights run through dense kernels, so the zeros cost as much as any
other value — this is a quality/size method here (2:4 sparse kernels exist only on CUDA). The
record's `metrics` carry the achieved sparsity and the retrained-parameter count.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from executors.families import default_runner
from executors.families.lm.model import RMSNorm, count_parameters
from executors.methods.prune.surgery import (
    COMPOSES_WITH,
    cached_transform,
    load_into,
    recovery_objective,
    require_recovery,
    train,
)
from executors.registry import Method, MethodConfig, register_method

log = logging.getLogger(__name__)
SUBSETS = ("biases", "norms", "masklora", "scalelora")


@dataclass(frozen=True)
class PerpConfig(MethodConfig):
    sparsity: float = 0.5  # unstructured only; an N:M pattern fixes it at 1 − N/M
    pattern: str = "unstructured"  # or "N:M", e.g. "2:4"
    retrain: str = "biases,norms"  # comma-separated subset of biases, norms, masklora, scalelora; "" = none
    lora_rank: int = 4
    steps: int = 30
    batch: int = 8
    seq_len: int = 64
    lr: float = 2e-3
    seed: int = 0
    version: int = 1


def subsets_of(config: PerpConfig) -> frozenset[str]:
    chosen = frozenset(s.strip() for s in config.retrain.split(",") if s.strip())
    unknown = chosen - set(SUBSETS)
    if unknown:
        raise ValueError(f"prune.perp: unknown retrain subsets {sorted(unknown)} (known: {', '.join(SUBSETS)})")
    return chosen


def n_m(pattern: str) -> tuple[int, int] | None:
    if pattern == "unstructured":
        return None
    try:
        n, m = (int(part) for part in pattern.split(":"))
    except ValueError:
        raise ValueError(f"prune.perp: pattern must be 'unstructured' or 'N:M', not {pattern!r}") from None
    if not 0 < n < m:
        raise ValueError(f"prune.perp: N:M needs 0 < N < M, got {pattern!r}")
    return n, m


def magnitude_mask(weight: torch.Tensor, sparsity: float, pattern: str) -> torch.Tensor:
    """True where a weight survives: the largest magnitudes per layer, or per group of M inputs."""
    magnitude = weight.detach().abs()
    groups = n_m(pattern)
    if groups is None:
        keep = weight.numel() - round(weight.numel() * sparsity)
        mask = torch.zeros(weight.numel(), dtype=torch.bool)
        mask[magnitude.flatten().topk(keep).indices] = True
        return mask.view_as(weight)
    n, m = groups
    if weight.shape[1] % m:
        raise ValueError(f"prune.perp: {pattern} needs input widths divisible by {m}, got {weight.shape[1]}")
    blocks = magnitude.reshape(-1, m)
    mask = torch.zeros_like(blocks, dtype=torch.bool)
    mask.scatter_(1, blocks.topk(n, dim=1).indices, True)
    return mask.view_as(weight)


class PerpLinear(nn.Module):
    """A pruned linear layer whose frozen weight is adapted only through the chosen subsets."""

    weight: torch.Tensor  # buffers, registered in __init__
    keep: torch.Tensor

    def __init__(self, linear: nn.Linear, keep: torch.Tensor, subsets: frozenset[str], rank: int):
        super().__init__()
        out_features, in_features = linear.weight.shape
        self.register_buffer("weight", (linear.weight.detach() * keep).clone())
        self.register_buffer("keep", keep)
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        if "biases" in subsets:
            bias = nn.Parameter(bias if bias is not None else torch.zeros(out_features))
        self.bias = bias
        self.mask_lora = self._adapter(out_features, in_features, rank) if "masklora" in subsets else None
        self.scale_lora = self._adapter(out_features, in_features, rank) if "scalelora" in subsets else None

    @staticmethod
    def _adapter(out_features: int, in_features: int, rank: int) -> nn.ParameterList:
        # B = 0 so training starts at the pruned model; A as in LoRA (Kaiming-uniform scale).
        a = torch.empty(rank, in_features)
        nn.init.kaiming_uniform_(a, a=5**0.5)
        return nn.ParameterList([nn.Parameter(torch.zeros(out_features, rank)), nn.Parameter(a)])

    def effective_weight(self) -> torch.Tensor:
        weight = self.weight
        if self.mask_lora is not None:
            b, a = self.mask_lora
            weight = weight + (b @ a) * self.keep
        if self.scale_lora is not None:
            b, a = self.scale_lora
            weight = weight * (1 + b @ a)
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def merged(self) -> nn.Linear:
        out_features, in_features = self.weight.shape
        linear = nn.Linear(in_features, out_features, bias=self.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(self.effective_weight() * self.keep)  # exact zeros, whatever rounding did
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear


def block_linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) for every linear layer inside the transformer blocks."""
    return [
        (parent, name, child)
        for parent in model.get_submodule("layers").modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]


def perp(model: nn.Module, bundle, config: PerpConfig) -> tuple[nn.Module, dict]:
    subsets = subsets_of(config)
    torch.manual_seed(config.seed)
    pruned = copy.deepcopy(model).eval()
    pruned.requires_grad_(False)
    wrapped = []
    for parent, name, linear in block_linears(pruned):
        layer = PerpLinear(
            linear, magnitude_mask(linear.weight, config.sparsity, config.pattern), subsets, config.lora_rank
        )
        setattr(parent, name, layer)
        wrapped.append((parent, name, layer))
    params = [p for _, _, layer in wrapped for p in layer.parameters()]
    if "norms" in subsets:
        norms = [p for m in pruned.modules() if isinstance(m, (RMSNorm, nn.LayerNorm)) for p in m.parameters()]
        for weight in norms:
            weight.requires_grad_(True)
        params += norms
    losses = []
    if params and config.steps > 0:
        windows, loss_fn = recovery_objective(
            bundle, min(4096, max(64, config.steps * config.batch)), config.seq_len, config.seed
        )
        losses = train(
            pruned,
            params,
            windows,
            steps=config.steps,
            batch=config.batch,
            lr=config.lr,
            seed=config.seed,
            loss_fn=loss_fn,
        )
    kept = sum(int(layer.keep.sum()) for _, _, layer in wrapped)
    total = sum(layer.keep.numel() for _, _, layer in wrapped)
    for parent, name, layer in wrapped:
        setattr(parent, name, layer.merged())
    pruned.requires_grad_(True)
    retrained = sum(p.numel() for p in params)
    meta = {
        "biased": [f"{_path(pruned, parent)}.{name}" for parent, name, layer in wrapped if layer.bias is not None],
        "sparsity": round(1 - kept / total, 4),
        "retrained_params": retrained,
        "retrained_fraction": round(retrained / count_parameters(model), 6),
        "first_loss": round(losses[0], 4) if losses else None,
        "last_loss": round(losses[-1], 4) if losses else None,
    }
    return pruned.eval(), meta


def _path(root: nn.Module, module: nn.Module) -> str:
    return next(name for name, candidate in root.named_modules() if candidate is module)


def load_cached(model: nn.Module, state: dict, meta: dict) -> nn.Module:
    restored = copy.deepcopy(model)
    for name in meta["biased"]:
        linear = restored.get_submodule(name)
        assert isinstance(linear, nn.Linear), f"{name} was merged back into a linear layer"
        linear.bias = nn.Parameter(torch.zeros(linear.out_features))
    load_into(restored, state)
    return restored.eval()


@register_method(
    "prune.perp",
    PerpConfig,
    category="pruning",
    families=("lm", "encoder"),
    changes=("weights", "outputs"),
    paper="PERP: Rethinking the Prune-Retrain Paradigm in the Era of LLMs",
    arxiv="2312.15230",
    catalogue_row=77,
    lossless=False,
)
class Perp(Method):
    order = 5  # a weight transform: before quantization (10) and decoding strategies
    composes_with = COMPOSES_WITH

    def supports(self, bundle, device):
        return require_recovery(bundle)

    def apply(self, bundle, config):
        subsets_of(config)
        n_m(config.pattern)
        if not 0.0 <= config.sparsity < 1.0 or config.steps < 0 or config.lora_rank < 1:
            raise ValueError("prune.perp: sparsity in [0, 1), steps ≥ 0, lora_rank ≥ 1")
        # r2: recovery schedule + window pool changed, so older cache entries are not reused
        model, meta, cached = cached_transform(
            "perp-r2", bundle, config, perp, lambda state, meta: load_cached(bundle.model, state, meta)
        )
        stats = {key: meta[key] for key in ("sparsity", "retrained_params", "retrained_fraction", "last_loss")}
        stats.update(
            pattern=config.pattern,
            retrain=config.retrain,
            setup_training_s=meta["training_s"],
            pruned_cached=cached,
            sparse_kernels=False,
        )
        return default_runner(bundle, model, stats)
