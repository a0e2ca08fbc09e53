"""The vision family's models: transformers' own image classifiers, built from a config, no download.

`ImageClassifier` wraps a `ViTForImageClassification`, `MobileViTForImageClassification` or
`ResNetForImageClassification` (what a user's Hugging Face vision checkpoint loads into) as the
family runs it: [-1, 1] pixels in, logits out, at any resolution the model was trained for (a
ViT interpolates its position embeddings). It also exposes the model as stages — an embedding,
a list of blocks, a pooled read-out at any depth, the head — which the anytime head and the
student search read, and a ViT's multi-view input mode (a thumbnail and crops, below).

Multi-view input (`[B, V, 3, r, r]`: view 0 the thumbnail, views 1… the crops of a high-resolution
image, each at a resolution the model knows): the first `split` blocks encode every view on its
own, as a high-resolution LVLM's vision encoder does; the remaining blocks run once over the
thumbnail's class token, its patch tokens and every crop's patch tokens together, and the
thumbnail's class token is classified. Token compression between the two parts is what
GlobalCom² does (`executors/methods/tokens/globalcom2.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("vit", "mobilevit", "resnet")
# The store's ModelSpec.family for each: what the advisor sees as the kind of model.
STORE_FAMILY = {"vit": "vit", "mobilevit": "hybrid-vit", "resnet": "cnn"}
CAPABILITIES = {
    "vit": frozenset({"image_classifier", "linear_layers", "vit_tokens", "stage_features"}),
    "mobilevit": frozenset({"image_classifier", "linear_layers", "conv_layers", "hybrid_blocks", "stage_features"}),
    "resnet": frozenset({"image_classifier", "conv_layers", "stage_features"}),
}


def transformers_classes(model_type: str):
    """(config class, model class) of one architecture; imported late (transformers is slow to import)."""
    from transformers import (
        MobileViTConfig,
        MobileViTForImageClassification,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # per-shard progress bars in every zoo load and save
    classes = {
        "vit": (ViTConfig, ViTForImageClassification),
        "mobilevit": (MobileViTConfig, MobileViTForImageClassification),
        "resnet": (ResNetConfig, ResNetForImageClassification),
    }
    if model_type not in classes:
        raise ValueError(f"unsupported vision model type {model_type!r} (supported: {', '.join(ARCHITECTURES)})")
    return classes[model_type]


def build_net(model_type: str, config: dict, seed: int = 0) -> nn.Module:
    config_class, model_class = transformers_classes(model_type)
    torch.manual_seed(seed)
    return model_class(config_class(**config)).eval()


class ImageClassifier(nn.Module):
    """A transformers image classifier: pixels [B, 3, r, r] (or views [B, V, 3, r, r]) → logits [B, classes]."""

    def __init__(self, net: nn.Module, split: int | None = None):
        super().__init__()
        self.net: Any = net  # a transformers classifier: its submodules differ per architecture
        config: Any = net.config
        self.model_type: str = config.model_type
        if self.model_type not in ARCHITECTURES:
            raise ValueError(f"unsupported vision model type {self.model_type!r}")
        self.split = split if split is not None else len(self.blocks()) // 2  # multi-view: blocks per view

    @property
    def native_resolution(self) -> int:
        return int(getattr(self.net.config, "image_size", 0) or 0)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() == 5:
            return self.head(self.read_out(self.run_blocks(self.fuse_views(pixel_values), self.split)))
        if self.model_type == "vit":
            interpolate = pixel_values.shape[-1] != self.native_resolution
            return self.net(pixel_values=pixel_values, interpolate_pos_encoding=interpolate).logits
        return self.net(pixel_values=pixel_values).logits

    # ---------------------------------------------------------------- stages

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.model_type == "vit":
            interpolate = pixel_values.shape[-1] != self.native_resolution
            return self.net.vit.embeddings(pixel_values, interpolate_pos_encoding=interpolate)
        if self.model_type == "mobilevit":
            return self.net.mobilevit.conv_stem(pixel_values)
        return self.net.resnet.embedder(pixel_values)

    def blocks(self) -> list[nn.Module]:
        if self.model_type == "vit":
            return list(self.net.vit.layers)
        if self.model_type == "mobilevit":
            return list(self.net.mobilevit.encoder.layer)
        return list(self.net.resnet.encoder.stages)

    def run_blocks(self, hidden: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for block in self.blocks()[start:stop]:
            hidden = block(hidden)
        return hidden

    def read_out(self, hidden: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """The pooled feature [B, D] a head reads after `depth` blocks (default: all of them)."""
        last = depth is None or depth == len(self.blocks())
        if self.model_type == "vit":
            return self.net.vit.layernorm(hidden)[:, 0]
        if self.model_type == "mobilevit" and last:
            return self.net.mobilevit.conv_1x1_exp(hidden).mean(dim=(-2, -1))
        return hidden.mean(dim=(-2, -1))

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net.classifier(pooled)

    def embed_modules(self) -> list[nn.Module]:
        """The modules `embed` runs (with `blocks` and `head_modules`: the whole model, in order)."""
        if self.model_type == "vit":
            return [self.net.vit.embeddings]
        if self.model_type == "mobilevit":
            return [self.net.mobilevit.conv_stem]
        return [self.net.resnet.embedder]

    def head_modules(self) -> list[nn.Module]:
        """The modules `read_out` (after the last block) and `head` run."""
        if self.model_type == "vit":
            return [self.net.vit.layernorm, self.net.classifier]
        if self.model_type == "mobilevit":
            return [self.net.mobilevit.conv_1x1_exp, self.net.classifier]
        return [self.net.classifier]

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The last block's output as a map [B, C, h, w] (a ViT's patch tokens on their grid)."""
        hidden = self.run_blocks(self.embed(pixel_values))
        if self.model_type != "vit":
            return hidden
        tokens = hidden[:, 1:]
        side = int(round(tokens.shape[1] ** 0.5))
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)

    def logits_from_map(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from a `feature_map` (a ViT's patch grid is mean-pooled, standing in for the class token)."""
        if self.model_type == "vit":
            return self.head(self.net.vit.layernorm(features.flatten(2).transpose(1, 2)).mean(1))
        return self.head(self.read_out(features))

    def depth_widths(self) -> list[int]:
        """The width of `read_out(h, depth)` for depth 1…n (what a head at that depth reads)."""
        config = self.net.config
        if self.model_type == "vit":
            return [config.hidden_size] * config.num_hidden_layers
        if self.model_type == "resnet":
            return list(config.hidden_sizes)
        necks = list(config.neck_hidden_sizes)  # stem, the five stages, the 1×1 expansion
        return necks[1:5] + [necks[6]]  # after the last stage `read_out` applies the expansion

    # ---------------------------------------------------------------- multi-view (ViT)

    def fuse_views(self, views: torch.Tensor) -> torch.Tensor:
        """Encodes each view through the first `split` blocks and joins them into one sequence:
        the thumbnail's class token and patch tokens, then every crop's patch tokens."""
        if self.model_type != "vit":
            raise ValueError("multi-view input runs on ViT models only")
        batch, count = views.shape[:2]
        hidden = self.run_blocks(self.embed(views.flatten(0, 1)), 0, self.split)
        hidden = hidden.unflatten(0, (batch, count))
        return torch.cat([hidden[:, 0], hidden[:, 1:, 1:].flatten(1, 2)], dim=1)


def bundle_classifier(bundle) -> ImageClassifier:
    """A vision bundle's model as the family built it (methods replace it only in their runners)."""
    if not isinstance(bundle.model, ImageClassifier):
        raise TypeError(
            f"{bundle.spec.name}: a vision bundle holds an ImageClassifier, not {type(bundle.model).__name__}"
        )
    return bundle.model


def multi_view(pixels: torch.Tensor, grid: int = 2) -> torch.Tensor:
    """A high-resolution batch [B, 3, R, R] as views [B, 1 + grid², 3, R/grid, R/grid]: the
    thumbnail (area-downsampled) first, then the crops row by row."""
    side = pixels.shape[-1] // grid
    thumbnail = F.interpolate(pixels, size=(side, side), mode="area")
    crops = pixels.unfold(2, side, side).unfold(3, side, side)  # [B, 3, g, g, side, side]
    crops = crops.permute(0, 2, 3, 1, 4, 5).reshape(pixels.shape[0], grid * grid, 3, side, side)
    return torch.cat([thumbnail[:, None], crops], dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


VISION_META = "vision.json"  # beside a checkpoint: the image set it was trained on and its resolutions


def save_classifier(classifier: ImageClassifier, folder: Path, meta: dict) -> None:
    """A plain Hugging Face folder (config.json + model.safetensors) plus vision.json."""
    folder.mkdir(parents=True, exist_ok=True)
    classifier.net.save_pretrained(str(folder), safe_serialization=True)
    (folder / VISION_META).write_text(json.dumps({**meta, "split": classifier.split}, indent=2))


def is_vision_folder(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.exists() or not (folder / "model.safetensors").exists():
        return False
    return json.loads(config.read_text()).get("model_type") in ARCHITECTURES


def load_classifier(folder: Path) -> tuple[ImageClassifier, dict]:
    """Weights only, from safetensors, through the architecture's own transformers class (no remote code)."""
    model_type = json.loads((folder / "config.json").read_text())["model_type"]
    _, model_class = transformers_classes(model_type)
    net = model_class.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    meta_path = folder / VISION_META
    if not meta_path.exists():
        raise ValueError(
            f"{folder}: a vision checkpoint needs {VISION_META} naming the image set it classifies "
            '(e.g. {"dataset": "shapes", "resolutions": [64]}): quality is measured on that set'
        )
    meta = json.loads(meta_path.read_text())
    return ImageClassifier(net.eval(), split=meta.get("split")), meta


Forward = Callable[[torch.Tensor], torch.Tensor]
