"""The diffusion zoo: class-conditional UNets and DiTs trained here, deterministically, on digits and shapes.

Each entry trains a diffusers model with the DDPM noise-prediction loss (1 000 training steps
of a linear β schedule, uniform t) and label dropout (10 % of labels replaced by the null class,
so one network gives both branches of classifier-free guidance), through the project's one
seeded loop on one thread. The folder is a diffusers folder (`config.json` +
`diffusion_pytorch_model.safetensors`) plus `manifest.json`; a user's diffusers folder with a
`diffusion.json` naming its image set loads the same way (`local:/path`), weights from
safetensors only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from executors.families.diffusion.data import ImageSet, image_set
from executors.families.diffusion.networks import denoiser_for
from executors.families.diffusion.sampler import TRAIN_TIMESTEPS, DiffusionModel, ModelInfo, make_scheduler
from executors.registry import ModelBundle, ModelSpec
from executors.training import Schedule, train

log = logging.getLogger(__name__)

LABEL_DROPOUT = 0.1
WEIGHTS = "diffusion_pytorch_model.safetensors"
SIDECAR = "diffusion.json"  # a user's folder: which image set (and class count) its model was trained on


@dataclass(frozen=True)
class Recipe:
    name: str
    architecture: str  # unet or dit
    dataset: str
    resolution: int
    config: dict[str, Any]
    steps: int
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    seed: int = 0
    note: str = ""
    classes: int = field(default=10)


def _unet(channels: tuple[int, ...], attention_level: int, classes: int, resolution: int, groups: int = 2) -> dict:
    levels = len(channels)
    return {
        "sample_size": resolution,
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": list(channels),
        "layers_per_block": 1,
        "down_block_types": ["AttnDownBlock2D" if i == attention_level else "DownBlock2D" for i in range(levels)],
        "up_block_types": [
            "AttnUpBlock2D" if levels - 1 - i == attention_level else "UpBlock2D" for i in range(levels)
        ],
        "num_class_embeds": classes + 1,  # + the null class of the unconditional branch
        "norm_num_groups": groups,
        "attention_head_dim": 8,
    }


def _dit(width: int, layers: int, classes: int, resolution: int, patch: int = 2) -> dict:
    return {
        "num_attention_heads": width // 16,
        "attention_head_dim": 16,
        "in_channels": 1,
        "out_channels": 1,
        "num_layers": layers,
        "sample_size": resolution,
        "patch_size": patch,
        "num_embeds_ada_norm": classes,  # diffusers adds the null class row itself
        "norm_num_groups": 1,
    }


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("diff-unet-digits", "unet", "digits", 32, _unet((16, 32, 32), 2, 10, 32, groups=8), 3000, batch_size=32,
               lr=2e-3, warmup=30, note="class-conditional UNet (16-32-32 channels, attention at 8×8) on digits 32×32"),
        Recipe("diff-dit-digits", "dit", "digits", 32, _dit(32, 4, 10, 32), 4500, batch_size=32, warmup=30,
               note="class-conditional DiT (patch 2: 256 tokens, width 32, 4 blocks) on digits 32×32"),
        Recipe("diff-unet-shapes", "unet", "shapes", 64, _unet((4, 8, 16, 16), 3, 5, 64), 500, batch_size=8,
               lr=3e-3, warmup=30, classes=5, note="class-conditional UNet (4-8-16-16 channels) on shapes 64×64"),
        Recipe("diff-dit-shapes-long", "dit", "shapes", 64, _dit(32, 2, 5, 64), 400, batch_size=8, warmup=30,
               classes=5, note="long-token DiT (patch 2 at 64×64: 1 024 tokens, width 32, 2 blocks) on shapes"),
        Recipe("diff-dit-tiny", "dit", "digits", 16, _dit(32, 3, 10, 16), 60, batch_size=32, lr=3e-3, warmup=10,
               note="test model: a 64-token DiT on digits 16×16, trained in seconds"),
    )
}  # fmt: skip


def build_net(architecture: str, config: dict):
    from diffusers import DiTTransformer2DModel, UNet2DModel  # diffusers imports transformers: not at import time

    cls = {"unet": UNet2DModel, "dit": DiTTransformer2DModel}[architecture]
    return cls.from_config(config)


def diffusion_loss(model: DiffusionModel, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
    """DDPM ε-prediction MSE at uniform t, with label dropout for the unconditional branch."""
    alphas = make_scheduler("ddpm").alphas_cumprod
    t = torch.randint(0, TRAIN_TIMESTEPS, (len(images),), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    drop = torch.rand(len(labels), generator=generator) < LABEL_DROPOUT
    labels = torch.where(drop, model.info.null_class, labels)
    a = alphas[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * images + (1 - a).sqrt() * noise
    return F.mse_loss(model(noisy, t, labels), noise)


@torch.no_grad()
def heldout_loss(model: DiffusionModel, data: ImageSet, count: int = 256) -> float:
    generator = torch.Generator().manual_seed(1234)
    images, labels = data.heldout_images[:count], data.heldout_labels[:count]
    return diffusion_loss(model, images, labels, generator).item()


def train_recipe(recipe: Recipe) -> tuple[DiffusionModel, dict]:
    data = image_set(recipe.dataset, recipe.resolution)
    torch.manual_seed(recipe.seed)
    net = build_net(recipe.architecture, recipe.config)
    model = DiffusionModel(denoiser_for(net), ModelInfo(data.classes, recipe.resolution, 1, recipe.dataset))

    def step_loss(step: int, generator: torch.Generator) -> torch.Tensor:
        pick = torch.randint(0, len(data.train_labels), (recipe.batch_size,), generator=generator)
        return diffusion_loss(model, data.train_images[pick], data.train_labels[pick], generator)

    schedule = Schedule(recipe.lr, recipe.steps, warmup=recipe.warmup, clip=1.0)
    result = train(model.parameters(), step_loss, schedule, seed=recipe.seed, modules=[model], name=recipe.name,
                   log_every=100)  # fmt: skip
    manifest = {
        "name": recipe.name,
        "source": f"zoo:{recipe.name}",
        "architecture": recipe.architecture,
        "dataset": recipe.dataset,
        "dataset_sha256": data.sha256,
        "resolution": recipe.resolution,
        "classes": data.classes,
        "recipe": dataclasses.asdict(recipe),
        "params": sum(p.numel() for p in net.parameters()),
        "train_seconds": round(result.seconds, 1),
        "final_train_loss": round(sum(result.losses[-50:]) / max(1, len(result.losses[-50:])), 4),
        "heldout_loss": round(heldout_loss(model, data), 4),
        "torch": torch.__version__,
        "threads": 1,
        "note": recipe.note,
    }
    return model, manifest


def build_recipe(name: str):
    def build(folder: Path, _root: Path | None) -> dict:
        model, manifest = train_recipe(RECIPES[name])
        model.net.net.save_pretrained(folder, safe_serialization=True)  # a diffusers folder
        (folder / SIDECAR).write_text(json.dumps({"dataset": manifest["dataset"], "classes": manifest["classes"]}))
        return manifest

    return build


def is_diffusion_folder(folder: Path) -> bool:
    config = folder / "config.json"
    if not (config.is_file() and (folder / WEIGHTS).is_file() and (folder / SIDECAR).is_file()):
        return False
    return json.loads(config.read_text()).get("_class_name") in ("UNet2DModel", "DiTTransformer2DModel")


def load_folder(folder: Path, source: str) -> ModelBundle:
    """A diffusers UNet2DModel / DiTTransformer2DModel folder: config, safetensors weights, `diffusion.json`."""
    config = json.loads((folder / "config.json").read_text())
    sidecar = json.loads((folder / SIDECAR).read_text())
    architecture = {"UNet2DModel": "unet", "DiTTransformer2DModel": "dit"}[config["_class_name"]]
    net = build_net(architecture, {k: v for k, v in config.items() if not k.startswith("_")})
    net.load_state_dict(load_file(str(folder / WEIGHTS)))
    resolution = int(config["sample_size"])
    image_set(sidecar["dataset"], resolution)  # fails early on an unknown image set
    info = ModelInfo(int(sidecar["classes"]), resolution, int(config["in_channels"]), sidecar["dataset"])
    return diffusion_bundle(DiffusionModel(denoiser_for(net.eval()), info).eval(), source, folder.name)


def load_zoo(folder: Path, source: str) -> ModelBundle:
    return load_folder(folder, source)


def load_local(folder: Path, source: str) -> ModelBundle | None:
    return load_folder(folder, source) if is_diffusion_folder(folder) else None


def diffusion_bundle(model: DiffusionModel, source: str, name: str) -> ModelBundle:
    net, info = model.net, model.info
    config: Any = net.net.config
    dit = net.architecture == "diffusion-dit"
    tokens = (info.resolution // config.patch_size) ** 2 if dit else None
    spec = ModelSpec(
        source=source,
        name=name,
        architecture=net.architecture,
        params=sum(p.numel() for p in net.parameters()),
        layers=len(config.block_out_channels) if not dit else config.num_layers,
        width=net.embedding_dim if dit else max(config.block_out_channels),
        heads=config.num_attention_heads if dit else None,
        context=tokens,
        extra={
            "resolution": info.resolution,
            "classes": info.classes,
            "dataset": info.dataset,
            "tokens": tokens,
            "patch_size": config.patch_size if dit else None,
            "macs_per_eval": sum(model.macs.values()),
        },
    )
    capabilities = {"denoiser", "class_conditional", "linear_layers", "feature_cache"}
    capabilities |= {"dit_blocks", "attention_tokens"} if dit else {"unet_levels", "conv_layers"}
    data = {"dataset": info.dataset, "resolution": info.resolution}
    return ModelBundle(model, "diffusion", spec, capabilities=frozenset(capabilities), data=data)
