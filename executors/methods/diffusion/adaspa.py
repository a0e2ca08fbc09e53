"""`attn.adaspa_block_sparse`: AdaSpa (Xia et al., arXiv 2502.21079, catalogue row 13) on a long-token DiT.

Training-free sparse attention for diffusion transformers, as the paper builds it:
- **blockified pattern**: attention is cut into block×block tiles (`accel_kernels/block_sparse_attn.py`);
  a query block attends only to its kept key blocks;
- **adaptive, head-specific sparsity**: per (sample, head, query block) the fewest key blocks
  whose exact attention mass reaches `coverage` are kept, so every head keeps what it needs;
- **online precise search, reused across steps**: the first `dense_fraction` of the steps run
  dense (the layout of early, noisy steps is unstable); at the first sparse step, and again at
  `searches − 1` evenly spaced later steps, the pattern is searched from that step's own exact
  attention and then reused by the steps in between — the pattern of a sample changes slowly
  along its trajectory.
The attention itself goes through `accel_kernels.dispatch.block_sparse_attention`: the Triton
block-sparse flash-attention kernel on CUDA, its PyTorch reference (dense attention with the
block mask applied) elsewhere — on CPU that reference is slower than dense attention, so this
method measures quality there, and its speed only where the kernel runs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from accel_kernels import dispatch
from accel_kernels.block_sparse_attn import BlockSparseLayout, block_layout, select_block_mask
from executors.families import default_runner
from executors.families.diffusion.sampler import Run
from executors.methods.diffusion.engine import base_of
from executors.registry import Method, MethodConfig, bounded, register_method

KERNEL_BLOCKS = (128, 64, 32, 16)


@dataclass(frozen=True)
class AdaSpaConfig(MethodConfig):
    coverage: float = bounded(0.9, 0.05, 1.0)  # attention mass each query block keeps
    block_size: int = bounded(0, 0, 128)  # 0: the largest kernel block giving ≥ 16 blocks per row
    dense_fraction: float = bounded(0.1, 0.0, 0.9)  # leading steps that run dense
    searches: int = bounded(2, 1, 100)  # pattern searches per sampling call
    version: int = 1


def block_for(tokens: int, requested: int) -> int:
    if requested:
        return requested
    return next((b for b in KERNEL_BLOCKS if tokens // b >= 16), KERNEL_BLOCKS[-1])


@dataclass
class SparseContext:
    """What the processors of one model read: the phase of the current step and each layer's layout."""

    config: AdaSpaConfig
    phase: str = "dense"  # dense, search or sparse
    layouts: dict[int, BlockSparseLayout] = field(default_factory=dict)
    densities: list[float] = field(default_factory=list)

    def attend(self, layer: int, q, k, v) -> torch.Tensor:
        if self.phase == "dense" or (self.phase == "sparse" and layer not in self.layouts):
            return F.scaled_dot_product_attention(q, k, v)
        block = block_for(q.shape[2], self.config.block_size)
        if self.phase == "search" or self.layouts[layer].mask.shape[0] != q.shape[0]:
            mask = select_block_mask(q, k, block, self.config.coverage)
            self.layouts[layer] = block_layout(mask, block, q.shape[0], q.shape[1])
            self.densities.append(self.layouts[layer].density)
        layout: Any = self.layouts[layer]  # the dispatcher passes a prebuilt layout through to the kernel
        return dispatch.block_sparse_attention(q, k, v, layout, block, sm_scale=1 / math.sqrt(q.shape[-1]))


class AdaSpaProcessor:
    """A diffusers attention processor for DiT self-attention whose attention is the context's."""

    def __init__(self, context: SparseContext, layer: int):
        self.context, self.layer = context, layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        batch, tokens, _ = hidden_states.shape
        heads = attn.heads
        q, k, v = (proj(hidden_states) for proj in (attn.to_q, attn.to_k, attn.to_v))
        q, k, v = (z.view(batch, tokens, heads, -1).transpose(1, 2) for z in (q, k, v))
        out = self.context.attend(self.layer, q, k, v).transpose(1, 2).reshape(batch, tokens, -1)
        return attn.to_out[1](attn.to_out[0](out))


class SparseSchedule:
    def __init__(self, run: Run, context: SparseContext):
        steps, config = len(run.timesteps), context.config
        first = min(steps - 1, max(1, math.ceil(config.dense_fraction * steps)))
        spacing = max(1, (steps - first) // config.searches)
        self.search_steps = {first + i * spacing for i in range(config.searches) if first + i * spacing < steps}
        self.first, self.context = first, context
        context.layouts.clear()
        context.densities.clear()
        self.run = run
        backend, _ = dispatch.backend_for(run.labels.device)
        run.stats["kernel_backend"] = backend

    def control(self, step: int):
        context = self.context
        context.phase = "dense" if step < self.first else "search" if step in self.search_steps else "sparse"
        if context.densities:
            self.run.stats["block_density_mean"] = round(sum(context.densities) / len(context.densities), 4)
        return context.phase


@dataclass(frozen=True)
class AdaSpaPolicy:
    context: SparseContext

    def start(self, run: Run) -> SparseSchedule:
        return SparseSchedule(run, self.context)


@register_method(
    "attn.adaspa_block_sparse",
    AdaSpaConfig,
    category="attention-sparsity",
    families=("diffusion",),
    changes=("outputs",),
    paper="Training-free and Adaptive Sparse Attention for Efficient Long Video Generation (AdaSpa)",
    arxiv="2502.21079",
    catalogue_row=13,
)
class AdaSpa(Method):
    order = 25
    composes_with = frozenset({"diff.steps.dpm_solver", "quant.int8_dynamic"})

    def supports(self, bundle, device):
        if "attention_tokens" not in bundle.capabilities:
            return "sparsifies a diffusion transformer's token attention; this denoiser has none"
        return None

    def apply(self, bundle, config):
        model = base_of(bundle.model)
        context = SparseContext(config)
        net = copy.deepcopy(model.net)
        blocks: Any = net.net.transformer_blocks
        for index, block in enumerate(blocks):
            block.attn1.set_processor(AdaSpaProcessor(context, index))
        return default_runner(bundle, model.with_net(net).with_plan(attention=AdaSpaPolicy(context)))
