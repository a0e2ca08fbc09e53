"""`head.gbnn`: a gradient-boosted anytime head — GBNN's boosted hidden units, with early exit.

Paper: Emami & Martínez-Muñoz, "Sequential Training of Neural Networks with Gradient Boosting"
(GBNN, arXiv 2109.12076 / IEEE Access 2023, catalogue row 37). GBNN's mechanism: the last hidden
layer is built sequentially by gradient boosting — stage t adds J hidden units (a one-hidden-
layer learner) fitted to the pseudo-residuals of the ensemble so far (for cross-entropy:
onehot(y) − softmax(F)), F ← F + ν·f_t — so the units of later stages can be switched off at test
time and the ensemble still predicts ("anytime").

Here the head sits on the frozen trained backbone and the stages read the pooled features of
increasingly deep blocks (`exits`: the last `exit_blocks` blocks, `stages_per_exit` stages
each), so switching later stages off also skips the blocks they need: at inference each image
leaves at the first exit where the ensemble's top softmax probability reaches `threshold`, and
the remaining blocks run only for the images still undecided. Deviation from GBNN: its stages
all read one feature vector; reading deeper features per stage is what makes the anytime
property save backbone compute. Training (features of a seeded pool of training images, each
stage by Adam on the squared error to the pseudo-residuals) is cached (setup time). On a ViT's
multi-view input the per-view blocks run first; exits at or after the join read the thumbnail's
class token, earlier ones are skipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from executors.caching import cached_tensors
from executors.families import default_runner
from executors.methods.distill.kd import training_images
from executors.registry import Method, MethodConfig, bounded, register_method
from executors.training import Schedule, train

CACHE_FORMAT = 1


@dataclass(frozen=True)
class GbnnConfig(MethodConfig):
    exit_blocks: int = bounded(3, 1, 64)  # exits after each of the last this many blocks
    stages_per_exit: int = bounded(2, 1, 32)
    hidden_units: int = bounded(32, 1, 4096)  # J: units per boosting stage
    shrinkage: float = bounded(1.0, 0.01, 1.0)  # ν
    threshold: float = bounded(0.9, 0.0, 1.0)  # exit once the top softmax probability reaches it
    pool_images: int = bounded(2048, 64, 65_536)
    steps: int = bounded(300, 0, 100_000)  # Adam steps per stage
    lr: float = bounded(3e-3, 1e-6, 1.0)
    seed: int = 0
    version: int = 1


class AnytimeClassifier(nn.Module):
    """A frozen backbone with boosted stages at several depths; images exit once confident."""

    prior: torch.Tensor

    def __init__(self, backbone: nn.Module, exits: list[int], widths: list[int], classes: int, config: GbnnConfig):
        super().__init__()
        self.backbone: Any = backbone  # an ImageClassifier: embed, blocks, read_out
        self.exits, self.threshold = exits, config.threshold
        self.stage_exit = [e for e in exits for _ in range(config.stages_per_exit)]
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Linear(widths[e - 1], config.hidden_units), nn.ReLU(), nn.Linear(config.hidden_units, classes)
            )
            for e in self.stage_exit
        )
        self.shrinkage = config.shrinkage
        self.register_buffer("prior", torch.zeros(classes))
        self.last_mean_exit = 0.0

    def stage_sum(self, depth: int, features: torch.Tensor) -> torch.Tensor:
        return sum(
            self.shrinkage * stage(features)
            for stage, e in zip(self.stages, self.stage_exit, strict=True)
            if e == depth
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        backbone = self.backbone
        if pixels.dim() == 5:  # multi-view: the per-view blocks first; exits from the joined sequence on
            first, hidden = backbone.split, backbone.fuse_views(pixels)
        else:
            first, hidden = 0, backbone.embed(pixels)
        logits = self.prior.expand(len(pixels), -1).clone()
        out, active, exited_at = torch.empty_like(logits), torch.arange(len(pixels)), torch.zeros(len(pixels))
        for depth, block in enumerate(backbone.blocks(), start=1):
            if depth > first:
                hidden = block(hidden)
            if depth not in self.exits or depth < first:
                continue
            logits = logits + self.stage_sum(depth, backbone.read_out(hidden, depth))
            done = (
                logits.softmax(-1).amax(-1) >= self.threshold
                if depth < self.exits[-1]
                else torch.ones_like(logits[:, 0], dtype=torch.bool)
            )
            out[active[done]], exited_at[active[done]] = logits[done], depth
            active, hidden, logits = active[~done], hidden[~done], logits[~done]
            if not len(active):
                break
        self.last_mean_exit = exited_at.mean().item()
        return out

    def call_figures(self) -> dict:
        return {"mean_exit_block": round(self.last_mean_exit, 3)}


def pooled_features(backbone, pixels: torch.Tensor, exits: list[int]) -> dict[int, torch.Tensor]:
    with torch.no_grad():
        hidden, feats = backbone.embed(pixels), {}
        for depth, block in enumerate(backbone.blocks(), start=1):
            hidden = block(hidden)
            if depth in exits:
                feats[depth] = backbone.read_out(hidden, depth)
    return feats


def fit(model: AnytimeClassifier, bundle, config: GbnnConfig) -> dict:
    images, resolutions = training_images(bundle), bundle.spec.extra["resolutions"]
    generator = torch.Generator().manual_seed(config.seed)
    per = config.pool_images // len(resolutions)
    pools = [images(per, step, generator) for step in range(len(resolutions))]  # one pool per resolution
    feats = [pooled_features(model.backbone, pixels, model.exits) for pixels, _ in pools]
    labels = torch.cat([y for _, y in pools])
    features = {e: torch.cat([f[e] for f in feats]) for e in model.exits}
    onehot = F.one_hot(labels, len(model.prior)).float()
    model.prior.copy_(onehot.mean(0).clamp_min(1e-6).log())
    ensemble = model.prior.expand(len(labels), -1).clone()
    losses = []
    for stage, depth in zip(model.stages, model.stage_exit, strict=True):
        residual = onehot - ensemble.softmax(-1)  # the negative gradient of cross-entropy at F

        def step_loss(step: int, gen: torch.Generator, stage=stage, depth=depth, residual=residual) -> torch.Tensor:
            pick = torch.randint(len(labels), (256,), generator=gen)
            return F.mse_loss(stage(features[depth][pick]), residual[pick])

        result = train(
            stage.parameters(),
            step_loss,
            Schedule(config.lr, config.steps),
            seed=config.seed,
            modules=[stage],
            name="gbnn",
            log_every=0,
        )
        with torch.no_grad():
            ensemble = ensemble + model.shrinkage * stage(features[depth])
        losses.append(round(result.last_loss, 5))
        accuracy = (ensemble.argmax(-1) == labels).float().mean().item()
    return {"stage_losses": losses, "pool_accuracy": round(accuracy, 4)}


@register_method(
    "head.gbnn",
    GbnnConfig,
    category="early-exit",
    families=("vision",),
    changes=("weights", "outputs"),
    paper="Sequential Training of Neural Networks with Gradient Boosting (GBNN), as an anytime early-exit head",
    arxiv="2109.12076",
    catalogue_row=37,
    lossless=False,
)
class Gbnn(Method):
    order = 5
    composes_with = frozenset({"baseline"})

    def supports(self, bundle, device):
        if "stage_features" not in bundle.capabilities:
            return "reads pooled features after each block: the model must expose its stages"
        return None

    def apply(self, bundle, config):
        backbone = bundle.model
        depth = len(backbone.blocks())
        exits = list(range(max(1, depth - config.exit_blocks + 1), depth + 1))
        model = AnytimeClassifier(backbone, exits, backbone.depth_widths(), bundle.spec.extra["num_labels"], config)

        def build():
            meta = fit(model, bundle, config)
            return {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}, meta

        cached = cached_tensors(f"gbnn-v{CACHE_FORMAT}", backbone, asdict(config), build)
        if cached.hit:
            model.load_state_dict(cached.tensors, strict=False)
        stats = {
            "exits": exits,
            "threshold": config.threshold,
            "stages": len(model.stages),
            "pool_accuracy": cached.meta["pool_accuracy"],
            "setup_training_s": cached.build_s,
        }
        return default_runner(bundle, model.eval(), stats)
