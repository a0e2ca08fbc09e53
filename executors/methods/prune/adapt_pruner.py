"""`prune.struct.adapt_pruner`: adaptive structured pruning interleaved with recovery training.

Paper: Wang et al., "Adapt-Pruner: Adaptive Structural Pruning for Efficient Small Language
Model Training" (arXiv 2502.03460); the authors' code is research4pan/AdaptPruner. Mechanism:

- Layer importance (their "cosine" choice): how much a decoder layer changes its input,
  −cos(input, output) averaged over tokens, centred to mean 0 and scaled to max |·| = 1 across
  layers. Each increment moves a layer's sparsity by the step increment minus
  `amplitude × importance`, so layers that transform their input little lose more.
- Unit importance inside a layer: first-order Taylor |w · ∂L/∂w| summed over each attention
  unit's and each FFN channel's weights (their `param_first`, `sum` grouping), from the
  next-token loss on calibration windows.
- Adapt-Accel: the target is reached in `increments` small steps; each removes the lowest-
  scoring units to the layer's new sparsity and is followed by `recovery_steps` of full-
  parameter training, so the model recovers before the next cut (the paper removes ~5 % a step).

The units are sliced out (executors/pruning.py), so the result is a smaller dense model —
fewer parameters, smaller matrices, a smaller KV cache when whole heads go — and any speed-up
is real. Like the authors' code we prune attention heads and FFN channels, not the embedding
width. Deviation: per-layer unit counts round to nearest instead of flooring, so a 4-head
layer does not lose a head at 10 % sparsity. Pruning and training are seeded, run on one
thread, and cached as safetensors keyed by the model's weights and this config; the wall time
of pruning + training is reported as `setup_training_s` (the harness's setup time includes it
on a cold cache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from executors.families import default_runner
from executors.families.lm.model import DecoderLM, count_parameters
from executors.families.lm.workloads import lm_loss, training_windows
from executors.methods.prune.surgery import (
    COMPOSES_WITH,
    PrunedDecoderLM,
    as_pruned,
    attention_units,
    cached_transform,
    keep_attention_units,
    keep_ffn_channels,
    kept_count,
    layer_shapes,
    load_into,
    require_decoder,
    reshape_layers,
    taylor_scores,
    top_units,
    train,
)
from executors.registry import Method, MethodConfig, register_method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptPrunerConfig(MethodConfig):
    target_sparsity: float = 0.25  # mean fraction of attention units and FFN channels removed per layer
    increments: int = 4  # pruning steps towards the target (Adapt-Accel)
    amplitude: float = 0.02  # sparsity shift per step for a layer of importance ±1
    recovery_steps: int = 10  # full-parameter training steps after each increment
    importance_windows: int = 8  # calibration windows for the Taylor and layer-importance estimates
    batch: int = 8
    seq_len: int = 64
    lr: float = 3e-4  # recovery fine-tunes a trained model: below pre-training rates (zoo: 2e-3–3e-3)
    seed: int = 0
    version: int = 1


def layer_importance(model: DecoderLM, windows: torch.Tensor) -> list[float]:
    """−cos(layer input, layer output) per layer, centred and scaled to max |·| = 1."""
    raw = [0.0] * len(model.layers)

    def hook(index):
        def record(module, args, output):
            raw[index] = -torch.cosine_similarity(args[0], output, dim=-1).mean().item()

        return record

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(model.layers)]
    try:
        with torch.no_grad():
            model(windows[:, :-1])
    finally:
        for handle in handles:
            handle.remove()
    mean = sum(raw) / len(raw)
    centred = [r - mean for r in raw]
    scale = max(abs(c) for c in centred) or 1.0
    return [c / scale for c in centred]


def next_sparsity(current: list[float], importance: list[float], increment: float, amplitude: float) -> list[float]:
    return [min(0.99, max(0.0, s + increment - amplitude * i)) for s, i in zip(current, importance, strict=False)]


def prune_increment(
    model: PrunedDecoderLM, windows: torch.Tensor, sparsity: list[float], initial: list[tuple[int, int]]
) -> None:
    """Removes, per layer, the lowest-Taylor-score units down to that layer's sparsity."""
    head_dim = model.config.head_dim
    model.zero_grad(set_to_none=True)
    with torch.inference_mode(False), torch.enable_grad():
        lm_loss(model, windows).backward()
    for layer, (units0, channels0), target in zip(model.layers, initial, sparsity, strict=False):
        unit_scores, channel_scores = taylor_scores(layer, head_dim)
        keep_units = kept_count(units0, target)
        if keep_units < len(unit_scores):
            keep_attention_units(layer.attention, head_dim, top_units(unit_scores, keep_units))
        keep_channels = kept_count(channels0, target)
        if keep_channels < len(channel_scores):
            keep_ffn_channels(layer.feed_forward, top_units(channel_scores, keep_channels))
    model.zero_grad(set_to_none=True)


def recovery_windows(bundle, config: AdaptPrunerConfig) -> torch.Tensor:
    """One fresh window per training sample (a small pool would be memorised, not learned from)."""
    samples = config.increments * config.recovery_steps * config.batch
    return training_windows(bundle, min(4096, max(64, samples)), config.seq_len, config.seed + 1)


def adapt_prune(model: DecoderLM, bundle, config: AdaptPrunerConfig) -> tuple[PrunedDecoderLM, dict]:
    torch.manual_seed(config.seed)
    pruned = as_pruned(model)
    initial = [(len(attention_units(layer.attention)), layer.feed_forward.w1.out_features) for layer in pruned.layers]
    probe = training_windows(bundle, config.importance_windows, config.seq_len, config.seed)
    windows = recovery_windows(bundle, config)
    sparsity = [0.0] * len(pruned.layers)
    history = []
    for step in range(config.increments):
        importance = layer_importance(pruned, probe)
        sparsity = next_sparsity(sparsity, importance, config.target_sparsity / config.increments, config.amplitude)
        prune_increment(pruned, probe, sparsity, initial)
        losses = train(
            pruned,
            list(pruned.parameters()),
            windows,
            steps=config.recovery_steps,
            batch=config.batch,
            lr=config.lr,
            seed=config.seed + step,
        )
        history.append(
            {
                "layer_importance": [round(i, 4) for i in importance],
                "layer_sparsity": [round(s, 4) for s in sparsity],
                "params": count_parameters(pruned),
                "recovery_loss": round(losses[-1], 4) if losses else None,
            }
        )
        log.info(
            "adapt-pruner step %d/%d: %d params, sparsity %s",
            step + 1,
            config.increments,
            history[-1]["params"],
            history[-1]["layer_sparsity"],
        )
    return pruned, {
        "shapes": layer_shapes(pruned),
        "history": history,
        "params_before": count_parameters(model),
        "params_after": count_parameters(pruned),
    }


def restore(bundle):
    def from_cache(state, meta) -> PrunedDecoderLM:
        model = PrunedDecoderLM(bundle.model.config)
        reshape_layers(model, meta["shapes"])
        load_into(model, state)
        return model.eval()

    return from_cache


@register_method(
    "prune.struct.adapt_pruner",
    AdaptPrunerConfig,
    category="pruning",
    families=("lm",),
    changes=("params", "weights", "outputs"),
    paper="Adapt-Pruner: Adaptive Structural Pruning for Efficient Small Language Model Training",
    arxiv="2502.03460",
    catalogue_row=21,
    lossless=False,
)
class AdaptPruner(Method):
    order = 5  # a weight transform that changes shapes: before quantization (10) and decoding strategies
    composes_with = COMPOSES_WITH

    def supports(self, bundle, device):
        return require_decoder(bundle)

    def apply(self, bundle, config):
        if not 0.0 < config.target_sparsity < 1.0 or config.increments < 1 or config.recovery_steps < 0:
            raise ValueError("prune.struct.adapt_pruner: target_sparsity in (0, 1), increments ≥ 1, recovery_steps ≥ 0")
        # r2: recovery schedule + window pool changed, so older cache entries are not reused
        model, meta, cached = cached_transform("adapt_pruner-r2", bundle, config, adapt_prune, restore(bundle))
        stats = {
            "params_before": meta["params_before"],
            "params_after": meta["params_after"],
            "layer_shapes": meta["shapes"],
            "setup_training_s": meta["training_s"],
            "pruned_cached": cached,
        }
        return default_runner(bundle, model.to(bundle.model.tok_embeddings.weight.device), stats)
