"""Held-out perplexity of LM weight transforms at equal bits, without timing (the grid times them).

For each model: the activation-outlier descriptor (`activation_outlier_ratio`, the layers whose
inputs have the largest token ratio), then for each config the perplexity on the harness's own
held-out windows (`PPL_WINDOWS` × `PPL_LENGTH`, the figure every profile record holds), its
relative change against fp32, and the method's stats (training/calibration time, fp32 layers,
bits). Sets: `int8` (plain per-tensor int8 against the outlier-aware variants) and `edgeqat`
(EdgeQAT's QAT against PTQ on the same grid — `steps=0` is the deployed grid before training,
i.e. round-to-nearest with the same absmax steps, dynamic activations and token-adaptive bits —
and ABQ's round-to-nearest at W4). Prints JSON lines.

    PYTHONPATH=. python bench/executors_lm_quality.py --models zoo:smollm2-135m,zoo:lm-8m --sets int8
    PYTHONPATH=. python bench/executors_lm_quality.py --models zoo:lm-8m --sets edgeqat
    PYTHONPATH=. python bench/executors_lm_quality.py --models zoo:smollm2-135m --sets edgeqat-paper \
        --edgeqat-params '{"steps": 10, "batch": 2, "train_windows": 8, "train_len": 64}'
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import torch

import executors.methods  # noqa: F401  (registers every method)
from executors.activations import linear_input_stats
from executors.families.lm.harness import PPL_LENGTH, PPL_WINDOWS
from executors.families.lm.workloads import calibration_windows, heldout_windows, perplexity
from executors.methods.quant.int8_dynamic import Int8DynamicConfig, quantize_int8_dynamic
from executors.registry import config_from_json, context_length, get_method
from executors.zoo import load_bundle

OUTLIER = "quant.int8_outlier"
EDGEQAT = "quant.qat.edgeqat"
W4A8 = {"w_bits": 4, "a_bits": 8, "a_low_bits": 8, "kv_bits": 16, "kv_low_bits": 16, "per_token_activations": True}
SETS: dict[str, list[dict]] = {
    "int8": [
        {"method": "quant.int8_dynamic", "params": {}},  # applied past supports(): the defect itself
        {"method": OUTLIER, "params": {"per_token": True}},
        {"method": OUTLIER, "params": {"per_token": False, "smooth_alpha": 0.5}},
        {"method": OUTLIER, "params": {"per_token": False, "smooth_alpha": 0.8}},
        {"method": OUTLIER, "params": {"per_token": False, "keep_outlier_layers": True}},
        {"method": OUTLIER, "params": {"per_token": True, "smooth_alpha": 0.5}},
    ],
    "edgeqat": [
        {"method": EDGEQAT, "params": {**W4A8, "steps": 0}},  # PTQ on EdgeQAT's own grid
        {"method": EDGEQAT, "params": W4A8},
        {"method": EDGEQAT, "params": {**W4A8, "a_low_bits": 4, "kv_bits": 8, "kv_low_bits": 4, "steps": 0}},
        {"method": EDGEQAT, "params": {**W4A8, "a_low_bits": 4, "kv_bits": 8, "kv_low_bits": 4}},  # the paper's
        {"method": EDGEQAT, "params": {**W4A8, "a_bits": 4, "a_low_bits": 4, "steps": 0}},  # W4A4 PTQ
        {"method": EDGEQAT, "params": {**W4A8, "a_bits": 4, "a_low_bits": 4}},  # W4A4 QAT
        {"method": "quant.abq_arbitrary_bit", "params": {"w_bits": 4, "a_bits": 8, "epochs": 0}},  # RTN W4A8
    ],
}
SETS["edgeqat-paper"] = SETS["edgeqat"][:4]  # W4A8 and the paper's A8/A4 + KV8/4 mix, PTQ and QAT
SETS["edgeqat-w4a4"] = SETS["edgeqat"][4:6]  # W4A4 PTQ and QAT (with --edgeqat-params: the loss ablation)
STATS = ("fp32_layers", "int8_layers", "activation_scales", "smooth_alpha", "train_s", "train_cached", "bits",
         "final_train_losses", "calibration_s", "storage_bits")  # fmt: skip


def describe(bundle) -> dict:
    """The descriptor and the five layers with the most extreme token ratio on calibration text."""
    windows = calibration_windows(bundle, 2, min(128, context_length(bundle.model)))
    stats = linear_input_stats(bundle.model, windows)
    worst = sorted(stats.items(), key=lambda item: item[1].token_ratio, reverse=True)[:5]
    return {
        "activation_outlier_ratio": bundle.spec.extra.get("activation_outlier_ratio"),
        "worst_layers": {name: round(s.token_ratio, 1) for name, s in worst},
        "max_abs_input": round(max(float(s.channel_absmax.max()) for s in stats.values()), 1),
    }


def quality(bundle, entry: dict, windows: torch.Tensor, reference: float) -> dict:
    began = time.perf_counter()
    stats: dict = {}
    if entry["method"] == "quant.int8_dynamic":
        model = quantize_int8_dynamic(bundle.model, Int8DynamicConfig())
    else:
        runner: Any = get_method(entry["method"]).apply(bundle, config_from_json(entry))
        model, stats = runner.model, runner.stats
    apply_s = time.perf_counter() - began
    value = perplexity(model, windows)
    fp32 = stats.get("fp32_layers")
    return {
        "method": entry["method"],
        "params": entry["params"],
        "heldout_perplexity": round(value, 3),
        "relative_change": round(value / reference - 1, 4),
        "apply_s": round(apply_s, 1),
        **{k: v for k, v in stats.items() if k in STATS},
        **({"fp32_layers": len(fp32), "fp32_layer_names": fp32[:6]} if isinstance(fp32, list) else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="zoo:smollm2-135m")
    parser.add_argument("--sets", default="int8", help=f"comma-separated: {', '.join(SETS)}")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--edgeqat-params", default="{}", help="JSON params added to every EdgeQAT config")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    extra = json.loads(args.edgeqat_params)
    for source in args.models.split(","):
        bundle = load_bundle(source)
        windows = heldout_windows(bundle, PPL_WINDOWS, min(PPL_LENGTH, context_length(bundle.model)))
        reference = perplexity(bundle.model, windows)
        print(json.dumps({"model": source, "fp32_perplexity": round(reference, 3), **describe(bundle)}), flush=True)
        for name in args.sets.split(","):
            for entry in SETS[name]:
                if entry["method"] == EDGEQAT:
                    entry = {**entry, "params": {**extra, **entry["params"]}}  # PTQ entries keep steps=0
                print(json.dumps({"model": source, "set": name, **quality(bundle, entry, windows, reference)}),
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
