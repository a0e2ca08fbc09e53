"""How well each drafter guesses the model's own tokens on held-out prompts, and what it cost to train.

For every requested config of Medusa, parallel prompt decoding or SWIFT: the training cost and
curve (from the cached artefact's metadata: generation + training wall time, held-back top-1 per
head every few steps), then on held-out prompts — never seen in training — the top-1 accuracy
of each head against the model's own greedy continuation (Medusa) and the acceptance of a real
decode (batch 1, greedy, chain drafts so that every offered draft counts). Prints JSON lines.

    python bench/executors_drafters.py --model zoo:smollm2-135m --medusa generations,text
    python bench/executors_drafters.py --model zoo:smollm2-135m --swift 0.1,0.2,0.3,0.5
    python bench/executors_drafters.py --model zoo:lm-8m --prompts 16 --gen 64 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import torch

import executors.methods  # noqa: F401  (registers every method)
from executors.families.lm.workloads import heldout_prompts
from executors.methods.spec.distill import greedy_with_hidden
from executors.methods.spec.medusa import head_examples
from executors.registry import config_from_json, get_method
from executors.zoo import load_bundle


def heldout_head_accuracy(runner, bundle, prompts: torch.Tensor, gen: int) -> list[float]:
    """Top-1 of each Medusa head against the model's greedy continuation of held-out prompts."""
    hidden, targets = greedy_with_hidden(bundle.model, prompts, gen)
    accuracy = []
    with torch.inference_mode():
        for k in range(len(runner.heads.blocks)):
            inputs, labels = head_examples(hidden, targets, k)
            accuracy.append(round((runner.heads.head(inputs, k).argmax(-1) == labels).float().mean().item(), 4))
    return accuracy


def acceptance(runner, prompts: torch.Tensor, gen: int) -> dict:
    """Drafts accepted over drafts offered, one prompt at a time (a batch keeps its rows' minimum)."""
    accepted = drafted = steps = 0
    began = time.perf_counter()
    for row in range(len(prompts)):
        stats = runner.generate(prompts[row : row + 1], gen).stats
        accepted, drafted = accepted + stats["accepted"], drafted + stats["drafted"]
        steps += stats["verify_steps"]
    return {
        "acceptance_rate": round(accepted / max(drafted, 1), 4),
        "tokens_per_verify": round((accepted + steps) / max(steps, 1), 3),
        "decode_s": round(time.perf_counter() - began, 1),
    }


def run(method_id: str, params: dict, bundle, prompts, gen: int) -> dict:
    config = config_from_json({"method": method_id, "params": params})
    began = time.perf_counter()
    runner: Any = get_method(method_id).apply(bundle, config)  # each drafter's runner has its own attributes
    out: dict = {"method": method_id, "params": params, "apply_s": round(time.perf_counter() - began, 1)}
    if method_id == "lm.spec.medusa":
        out.update(
            training=runner.training,
            heldback_top1=[round(row[0], 4) for row in runner.accuracy],
            heldout_top1=heldout_head_accuracy(runner, bundle, prompts, gen),
        )
    elif method_id == "lm.spec.parallel_prompt":
        out.update(training=getattr(runner, "training", {}), heldback_top1=[round(r[0], 4) for r in runner.accuracy])
    with torch.inference_mode():
        out.update(acceptance(runner, prompts, gen))
    if method_id == "lm.spec.swift":
        out["skip_layers"] = sorted(runner.search.best) if getattr(runner, "search", None) else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:smollm2-135m")
    parser.add_argument("--prompts", type=int, default=8, help="held-out prompts (batch 1 each)")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--medusa", default="", help="distill_from values: generations,text")
    parser.add_argument("--medusa-params", default="{}", help="JSON params added to every Medusa config")
    parser.add_argument("--ppd", default="", help="distill_from values for lm.spec.parallel_prompt")
    parser.add_argument("--swift", default="", help="skip ratios")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model)
    prompts = heldout_prompts(bundle, args.prompts, args.prompt_len)
    runs = [("lm.spec.medusa", {"distill_from": s, "tree_nodes": 0, **json.loads(args.medusa_params)})
            for s in filter(None, args.medusa.split(","))]  # fmt: skip
    runs += [("lm.spec.parallel_prompt", {"distill_from": s}) for s in filter(None, args.ppd.split(","))]
    runs += [("lm.spec.swift", {"skip_ratio": float(r)}) for r in filter(None, args.swift.split(","))]
    for method_id, params in runs:
        result = run(method_id, params, bundle, prompts, args.gen)
        print(json.dumps({"model": args.model, "threads": args.threads, **result}), flush=True)


if __name__ == "__main__":
    main()
