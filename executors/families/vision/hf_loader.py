"""A Hugging Face vision `config.json` (ViT, MobileViT, ResNet) read for registration: the same
descriptors `zoo.vision_bundle` gives a loaded classifier — patch size, image size, the tokens a
ViT attends over — from the architecture's own transformers class built on empty (meta)
tensors, so no weight is loaded and no code of the checkpoint runs. (The weights' names are not
checked here: transformers renames a checkpoint's tensors as it loads them.)"""

from __future__ import annotations

import torch

from executors.families.vision.models import ARCHITECTURES, STORE_FAMILY, ImageClassifier, transformers_classes


def _classifier(hf: dict) -> ImageClassifier:
    if "auto_map" in hf:
        raise ValueError("this checkpoint asks for its own code (auto_map); remote code is never run")
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model type {model_type!r} is not a vision classifier ({', '.join(ARCHITECTURES)})")
    config_class, model_class = transformers_classes(model_type)
    try:
        config = config_class.from_dict(hf)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config.json does not describe a {model_type}: {str(exc)[:200]}") from None
    with torch.device("meta"):
        return ImageClassifier(model_class(config))


def describe(hf: dict) -> dict:
    classifier = _classifier(hf)
    config, model_type = classifier.net.config, classifier.model_type
    vit = model_type == "vit"
    heads = config.num_attention_heads if model_type != "resnet" else None
    widths = classifier.depth_widths()
    tokens = (config.image_size // config.patch_size) ** 2 if vit else None
    return {
        "family": STORE_FAMILY[model_type],
        "params": sum(p.numel() for p in classifier.parameters()),
        "layers": len(classifier.blocks()),
        "width": config.hidden_size if vit else max(widths),
        "heads": heads,
        "kv_heads": heads,
        "context": tokens + 1 if tokens is not None else None,  # the patch tokens and the class token
        "descriptors": {
            "model_type": model_type,
            "num_labels": config.num_labels,
            "stage_widths": widths,
            **({"patch_size": config.patch_size, "image_size": config.image_size, "tokens": tokens} if vit else {}),
        },
    }
