"""`diff.distill.speedupnet_adapter`: SpeedUpNet (Chai et al., arXiv 2312.08887, catalogue row 28).

SUN trains a small plug-in adapter, leaving the diffusion model frozen, so that one evaluation
per step gives the classifier-free-guided prediction: the adapter learns the offset between the
guided and the plain conditional output (the paper's negative–positive prompt offset, learned
through cross-attention adapters in Stable Diffusion). Our models are class-conditional with no
text cross-attention, so the adapter acts where their condition enters: it maps (class, guidance
scale, t) to an offset of the conditioning embedding — one per DiT block (adaLN input), one for a
UNet's time + class embedding — with a zero-initialised output, so training starts at the plain
conditional model. Its loss has the paper's two terms on teacher (full-CFG DDIM) trajectories:
- guidance distillation: ‖ε_adapter(x_t, t, c, w) − ε_cfg(x_t, t, c, w)‖²;
- Multi-Step Consistency (MSC): the student's one DDIM jump over two teacher steps must land where
  the teacher's two guided steps did, which keeps it consistent when it samples with fewer steps
  (`steps` > 0 caps them, the paper's few-step mode).
The adapter is trained once per model and config over a range of guidance scales, and cached.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from executors.caching import cached_tensors
from executors.families import default_runner
from executors.families.diffusion.networks import Control
from executors.families.diffusion.sampler import Run, Settings, make_scheduler
from executors.methods.diffusion.engine import base_of, needs_guidance, reference_trajectory
from executors.registry import Method, MethodConfig, bounded, register_method
from executors.training import Schedule, frozen, train

FREQUENCIES = 4


@dataclass(frozen=True)
class SpeedUpNetConfig(MethodConfig):
    steps: int = bounded(0, 0, 1000)  # 0: the workload's step count; above 0: at most this many
    hidden: int = bounded(64, 8, 1024)
    trajectories: int = bounded(32, 4, 4096)  # teacher trajectories the adapter learns from
    trajectory_steps: int = bounded(20, 4, 1000)
    iterations: int = bounded(200, 1, 100_000)
    batch: int = bounded(16, 1, 512)
    lr: float = bounded(3e-3, 1e-6, 1.0)
    msc_weight: float = bounded(0.5, 0.0, 100.0)
    guidance_min: float = bounded(1.5, 1.0, 20.0)
    guidance_max: float = bounded(5.0, 1.0, 20.0)
    seed: int = 0
    version: int = 1


class GuidanceAdapter(nn.Module):
    """(class, guidance scale, t) → an offset of the conditioning embedding for each unit that reads it."""

    def __init__(self, classes: int, dim: int, units: int, hidden: int):
        super().__init__()
        self.units, self.dim = units, dim
        self.label = nn.Embedding(classes + 1, hidden)
        self.inputs = nn.Linear(2 + 2 * FREQUENCIES, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, dim * units)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, labels: torch.Tensor, scale: float | torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        phase = t.float()[:, None] / 1000 * (2 ** torch.arange(FREQUENCIES)) * math.pi
        w = torch.as_tensor(scale, dtype=torch.float).reshape(-1, 1).expand(len(labels), 1)
        features = torch.cat([w, w.log(), phase.sin(), phase.cos()], dim=1)
        h = F.silu(self.label(labels) + self.inputs(features))
        offset = self.out(F.silu(self.mid(h)))
        if self.units == 1:
            return offset
        return offset.view(len(labels), self.units, self.dim).transpose(0, 1)


def adapter_for(model, config: SpeedUpNetConfig) -> GuidanceAdapter:
    den = model.net
    units = den.units if den.architecture == "diffusion-dit" else 1
    torch.manual_seed(config.seed)
    return GuidanceAdapter(model.info.classes, den.embedding_dim, units, config.hidden)


def teacher_data(model, config: SpeedUpNetConfig) -> dict[str, torch.Tensor]:
    """Inputs along full-CFG DDIM trajectories, the guided prediction there and the state two steps on."""
    generator = torch.Generator().manual_seed(config.seed)
    rows: dict[str, list] = {k: [] for k in ("x", "t", "labels", "w", "eps", "x2", "t2")}
    per_batch = 8
    for start in range(0, config.trajectories, per_batch):
        count = min(per_batch, config.trajectories - start)
        labels = torch.randint(0, model.info.classes, (count,), generator=generator)
        w = (
            config.guidance_min
            + (config.guidance_max - config.guidance_min) * torch.rand((), generator=generator).item()
        )
        path = reference_trajectory(model, labels, Settings(config.trajectory_steps, w, "ddim"), config.seed + start)
        states = path.inputs + [path.final]
        for k, t in enumerate(path.timesteps):
            rows["x"].append(path.inputs[k])
            rows["t"].append(torch.full((count,), t))
            rows["labels"].append(labels)
            rows["w"].append(torch.full((count,), w))
            rows["eps"].append(path.uncond[k] + w * (path.cond[k] - path.uncond[k]))
            ahead = min(k + 2, len(path.timesteps))
            rows["x2"].append(states[ahead])
            rows["t2"].append(torch.full((count,), path.timesteps[ahead] if ahead < len(path.timesteps) else -1))
    return {k: torch.cat(v) for k, v in rows.items()}


def ddim_jump(alphas: torch.Tensor, eps, t, t_next, x) -> torch.Tensor:
    """`ddim_step` for a batch whose rows jump between different time steps (t_next < 0: the end)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    alpha = alphas[t].view(shape)
    alpha_next = torch.where(t_next >= 0, alphas[t_next.clamp_min(0)], torch.ones(())).view(shape)
    x0 = ((x - (1 - alpha).sqrt() * eps) / alpha.sqrt()).clamp(-1, 1)
    return alpha_next.sqrt() * x0 + (1 - alpha_next).sqrt() * eps


def train_adapter(model, config: SpeedUpNetConfig) -> tuple[dict, dict]:
    data = teacher_data(model, config)
    adapter = adapter_for(model, config)
    alphas = make_scheduler("ddim").alphas_cumprod
    den = model.net

    def step_loss(step: int, generator: torch.Generator) -> torch.Tensor:
        pick = torch.randint(0, len(data["t"]), (config.batch,), generator=generator)
        x, t, labels, w = data["x"][pick], data["t"][pick], data["labels"][pick], data["w"][pick]
        offset = adapter(labels, w, t)
        eps = den(x, t, labels, Control(torch.arange(len(pick)), len(pick), emb_offset=offset))
        distill = F.mse_loss(eps, data["eps"][pick])
        return distill + config.msc_weight * F.mse_loss(
            ddim_jump(alphas, eps, t, data["t2"][pick], x), data["x2"][pick]
        )

    with frozen(den):
        result = train(adapter.parameters(), step_loss, Schedule(config.lr, config.iterations, warmup=10),
                       seed=config.seed, modules=[adapter], name="speedupnet adapter", log_every=0)  # fmt: skip
    return dict(adapter.state_dict()), {"final_loss": round(result.last_loss, 5), "train_s": round(result.seconds, 2)}


class DistilledGuidance:
    """One evaluation per step: the conditional branch with the adapter's offset."""

    def __init__(self, run: Run, adapter: GuidanceAdapter):
        self.run, self.adapter = run, adapter

    def predict(self, step: int, t: int, x: torch.Tensor) -> torch.Tensor:
        run = self.run
        offset = self.adapter(run.labels, run.settings.guidance_scale, torch.full((run.batch,), t))
        return run.evaluate(x, t, run.labels, run.cond_rows, step, emb_offset=offset)


class SpeedUpNetPolicy:
    def __init__(self, adapter: GuidanceAdapter):
        self.adapter = adapter
        self.modules = (adapter,)

    def requirement(self, settings):
        return needs_guidance(settings, "SpeedUpNet's adapter (distilled guidance)")

    def start(self, run: Run) -> DistilledGuidance:
        return DistilledGuidance(run, self.adapter)


@register_method(
    "diff.distill.speedupnet_adapter",
    SpeedUpNetConfig,
    category="distillation",
    families=("diffusion",),
    changes=("outputs", "forward_passes"),
    paper="SpeedUpNet: A Plug-and-Play Adapter Network for Accelerating Text-to-Image Diffusion Models",
    arxiv="2312.08887",
    catalogue_row=28,
)
class SpeedUpNet(Method):
    order = 40
    composes_with = frozenset({"quant.ptq.diffusion_timestep_calib", "quant.int8_dynamic"})

    def supports(self, bundle, device):
        return None if "class_conditional" in bundle.capabilities else "needs a class-conditional denoiser"

    def apply(self, bundle, config):
        if config.guidance_min > config.guidance_max:
            raise ValueError("guidance_min must not exceed guidance_max")
        model = base_of(bundle.model)
        adapter = adapter_for(model, config)
        cached = cached_tensors("diffusion-speedupnet", model.net, dataclasses.asdict(config),
                                lambda: train_adapter(model, config))  # fmt: skip
        adapter.load_state_dict(cached.tensors)
        adapter.eval()
        for p in adapter.parameters():
            p.requires_grad_(False)
        plan: dict[str, Any] = {"guidance": SpeedUpNetPolicy(adapter), "max_steps": config.steps or None}
        stats = {"setup_training_s": round(cached.build_s, 2), "adapter_final_loss": cached.meta.get("final_loss")}
        return default_runner(bundle, model.with_plan(**plan), stats)
