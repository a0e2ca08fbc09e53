"""`diff.cache.harmonica_router`: HarmoniCa's learned feature cache for DiTs (Huang et al., arXiv 2410.01723,
catalogue row 9).

A router holds one logit per (sampling step, DiT block): at inference a block whose gate σ(r) is
below `threshold` reuses its residual from the last step that computed it. Training follows the
paper's two parts:
- **Step-Wise Denoising Training (SDT)**: the router is trained along the student's own
  trajectory — every training step is one denoising step of an ongoing `batch`, the student
  (soft gates: g·fresh + (1−g)·cached) advances x with its own prediction, the cache carries
  over, and the teacher (no cache) predicts from the same x; each step's gates get their own
  update, as in inference.
- **Image-Error-Proxy-guided Objective (IEPO)**: the loss at step k is λ_k·‖ε_student − ε_teacher‖²
  (relative to the teacher's ‖ε‖²) plus β·(share of blocks computed); λ_k is the final-image
  error caused by reusing at step k alone under the current router (a short seeded batch run),
  refreshed every `refresh` trajectories and normalised to mean 1.
The router is trained once per sampling schedule and cached (setup time, never steady state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from executors.families import default_runner
from executors.families.diffusion.networks import _time
from executors.families.diffusion.sampler import Run, Stepper, combine, uniform_timesteps
from executors.methods.diffusion.engine import PerSchedule, base_of, note_artefact, settings_of
from executors.registry import Method, MethodConfig, bounded, register_method
from executors.training import Schedule, frozen, train

ROUTER_INIT = 2.0  # σ(2) ≈ 0.88: training starts near the uncached teacher


@dataclass(frozen=True)
class HarmoniCaConfig(MethodConfig):
    iterations: int = bounded(24, 1, 10_000)  # SDT trajectories
    batch: int = bounded(4, 1, 64)
    lr: float = bounded(0.1, 1e-5, 10.0)
    usage_weight: float = bounded(0.005, 0.0, 10.0)  # β: the cost of computing a block (vs relative ε error)
    threshold: float = bounded(0.5, 0.0, 1.0)  # reuse where σ(router) < threshold
    refresh: int = bounded(12, 1, 10_000)  # trajectories between image-error-proxy refreshes
    proxy_batch: int = bounded(2, 1, 64)
    seed: int = 0
    version: int = 1


def soft_eps(den, x, t: int, labels, gates, cache: dict) -> torch.Tensor:
    """A DiT forward whose block residuals mix fresh and cached values: g·fresh + (1−g)·cached."""
    tt = _time(torch.tensor(t), x.shape[0])
    h = den.net.pos_embed(x)
    for i, block in enumerate(den.net.transformer_blocks):
        fresh = den.block(block, h, den.conditioning(block, tt, labels, h.dtype)) - h
        delta = fresh if gates is None or i not in cache else gates[i] * fresh + (1 - gates[i]) * cache[i]
        cache[i] = delta.detach()
        h = h + delta
    return den.head(h, tt, labels)


def guided(den, x, t, labels, null, scale, gates, cache) -> torch.Tensor:
    if scale <= 1:
        return soft_eps(den, x, t, labels, gates, cache)
    eps = soft_eps(den, torch.cat([x, x]), t, torch.cat([labels, null]), gates, cache)
    cond, uncond = eps.chunk(2)
    return combine(cond, uncond, scale)


@torch.no_grad()
def image_error_proxy(den, settings, timesteps, explicit, logits, config, info) -> torch.Tensor:
    """λ_k: ‖x0 − x0 with reuse at step k only‖² under the hard router, normalised to mean 1."""
    labels = torch.arange(config.proxy_batch) % info.classes
    null = torch.full_like(labels, info.null_class)
    hard = (torch.sigmoid(logits) >= config.threshold).float()

    def final_image(reuse_at: int | None) -> torch.Tensor:  # the same seed each time: only step `reuse_at` differs
        generator = torch.Generator().manual_seed(config.seed + 7)
        x = torch.randn((config.proxy_batch, info.channels, info.resolution, info.resolution), generator=generator)
        stepper, cache = Stepper(settings.scheduler, settings.steps, explicit), dict[int, torch.Tensor]()
        for j, t in enumerate(timesteps):
            gates = hard[j] if j == reuse_at else None
            x = stepper.step(guided(den, x, t, labels, null, settings.guidance_scale, gates, cache), j, x, generator)
        return x

    reference = final_image(None)
    errors = torch.zeros(len(timesteps))
    for k in range(1, len(timesteps)):
        if hard[k].min() < 1:  # something is reused at step k
            errors[k] = (final_image(k) - reference).pow(2).mean()
    errors[0] = errors[1:].mean() if len(errors) > 1 else 1.0
    if errors.sum() == 0:
        return torch.ones(len(timesteps))
    return errors / errors.mean().clamp_min(1e-12)


def train_router(model, settings, timesteps, config: HarmoniCaConfig) -> tuple[dict, dict]:
    den, info = model.net, model.info
    explicit = None if timesteps == uniform_timesteps(settings.scheduler, settings.steps) else timesteps
    steps = len(timesteps)
    logits = torch.nn.Parameter(torch.full((steps, den.units), ROUTER_INIT))
    lam = torch.ones(steps)
    state: dict = {}

    def step_loss(index: int, generator: torch.Generator) -> torch.Tensor:
        trajectory, k = divmod(index, steps)
        if k == 0:
            if trajectory % config.refresh == 0:
                lam.copy_(image_error_proxy(den, settings, timesteps, explicit, logits.detach(), config, info))
            labels = torch.randint(0, info.classes, (config.batch,), generator=generator)
            shape = (config.batch, info.channels, info.resolution, info.resolution)
            state.update(x=torch.randn(shape, generator=generator), labels=labels, cache={}, teacher={},
                         stepper=Stepper(settings.scheduler, settings.steps, explicit))  # fmt: skip
        x, labels = state["x"], state["labels"]
        null = torch.full_like(labels, info.null_class)
        with torch.no_grad():
            teacher = guided(den, x, timesteps[k], labels, null, settings.guidance_scale, None, {})
        gates = torch.sigmoid(logits[k])
        student = guided(den, x, timesteps[k], labels, null, settings.guidance_scale, gates if k else None,
                         state["cache"])  # fmt: skip
        state["x"] = state["stepper"].step(student.detach(), k, x, generator)  # SDT: the student's own trajectory
        relative = F.mse_loss(student, teacher) / teacher.pow(2).mean().clamp_min(1e-12)
        return lam[k] * relative + config.usage_weight * gates.mean()

    schedule = Schedule(config.lr, config.iterations * steps, decay="constant", optimizer="adam")
    with frozen(den):
        result = train([logits], step_loss, schedule, seed=config.seed, name="harmonica router", log_every=0)
    router = logits.detach()
    reused = (torch.sigmoid(router[1:]) < config.threshold).float().mean().item() if steps > 1 else 0.0
    return {"router": router, "lambda": lam.clone()}, {"reuse_share": round(reused, 4),
                                                       "train_s": round(result.seconds, 2)}  # fmt: skip


class RoutedCache:
    def __init__(self, run: Run, router: torch.Tensor, threshold: float):
        self.reuse = [frozenset(torch.nonzero(torch.sigmoid(r) < threshold).flatten().tolist()) for r in router]

    def control(self, step: int, rows):
        return (self.reuse[step] if step > 0 else frozenset()), None


class HarmoniCaPolicy:
    def __init__(self, config: HarmoniCaConfig):
        self.config = config
        key = {k: getattr(config, k) for k in ("iterations", "batch", "lr", "usage_weight", "threshold", "refresh",
                                               "proxy_batch", "seed")}  # fmt: skip
        self.routers = PerSchedule("diffusion-harmonica-router", key, self._train)
        self._timesteps: dict = {}

    def _train(self, model, settings):
        return train_router(model, settings, self._timesteps[settings], self.config)

    def start(self, run: Run) -> RoutedCache:
        settings = settings_of(run)
        self._timesteps[settings] = run.timesteps
        cached = self.routers.get(run.base, settings)
        run.stats["router_reuse_share"] = cached.meta.get("reuse_share")
        note_artefact(run, "router", cached)
        return RoutedCache(run, cached.tensors["router"], self.config.threshold)


@register_method(
    "diff.cache.harmonica_router",
    HarmoniCaConfig,
    category="feature-caching",
    families=("diffusion",),
    changes=("outputs", "forward_passes"),
    paper="HarmoniCa: Harmonizing Training and Inference for Better Feature Caching in Diffusion Transformer "
    "Acceleration",
    arxiv="2410.01723",
    catalogue_row=9,
)
class HarmoniCa(Method):
    order = 20
    composes_with = frozenset({"diff.guidance.adaptive", "diff.steps.dpm_solver", "quant.ptq.diffusion_timestep_calib",
                               "quant.int8_dynamic"})  # fmt: skip

    def supports(self, bundle, device):
        if "dit_blocks" not in bundle.capabilities:
            return (
                "routes the blocks of a diffusion transformer; this denoiser has none (a UNet: see diff.cache.static)"
            )
        return None

    def apply(self, bundle, config):
        return default_runner(bundle, base_of(bundle.model).with_plan(features=HarmoniCaPolicy(config)))
