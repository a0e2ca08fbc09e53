"""The long zoo LMs: `lm-1m` fine-tuned to 8192 positions with passkey retrieval mixed in.

The zoo LMs were trained on 128-token windows. The fine-tunes run on the training split with
pairs and queries woven into the text (answer tokens up-weighted), in progressive lengths;
seeded, single-threaded and cached like every zoo model.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from executors.families.lm.model import DecoderLM, count_parameters, decoder_of
from executors.families.longctx.workload import retrieval_accuracy, retrieval_probes, token_stream, training_example
from executors.training import Schedule, train


@dataclass(frozen=True)
class LongRecipe:
    base: str  # zoo LM fine-tuned from
    max_seq_len: int
    stages: tuple[tuple[int, int, int], ...]  # (sequence length, batch, steps), shortest first
    lr: float
    answer_weight: float = 3.0
    queries: int = 2  # per training sequence
    warmup: int = 10
    seed: int = 0
    checks: tuple[int, ...] = (1024, 8192)  # context lengths whose retrieval accuracy goes in the manifest
    check_probes: int = 8


LONG_RECIPES = {
    # Retrieval is learnt on short, query-dense sequences (lm-1m-passkey), then carried to long
    # contexts by a second fine-tune from it (lm-1m-long), so each stage is cached on its own.
    "lm-1m-passkey": LongRecipe(
        "lm-1m",
        8192,
        ((128, 16, 800), (512, 4, 60), (2048, 1, 12), (8192, 1, 3)),
        3e-3,
        answer_weight=4.0,
        queries=4,
        checks=(512, 1024),
    ),
    "lm-1m-long": LongRecipe(
        "lm-1m-passkey", 8192, ((1024, 2, 100), (4096, 1, 8), (8192, 1, 2)), 1e-3, answer_weight=4.0, queries=4
    ),
}


def weighted_loss(model: DecoderLM, tokens: list[list[int]], weights: list[list[float]]) -> torch.Tensor:
    batch = torch.tensor(tokens)
    weight = torch.tensor(weights)[:, 1:]
    logits = model(batch[:, :-1])
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none")
    return (losses * weight.reshape(-1)).sum() / weight.sum()


def finetune_long(name: str, root: Path | None = None, recipe: LongRecipe | None = None) -> tuple[DecoderLM, dict]:
    """Fine-tunes the recipe's base zoo LM on corpus text with retrieval pairs; returns (model, manifest)."""
    from executors.zoo import load_bundle

    recipe = recipe or LONG_RECIPES[name]
    base = load_bundle(f"zoo:{recipe.base}", root)
    torch.manual_seed(recipe.seed)
    model = DecoderLM(replace(decoder_of(base.model).config, max_seq_len=recipe.max_seq_len))
    model.load_state_dict(base.model.state_dict())
    stream = token_stream(base.calibration_texts, base.tokenizer)  # the training split
    rng = random.Random(recipe.seed)  # examples are drawn by Python's RNG: the torch generator is unused
    stage_of_step = [(length, batch) for length, batch, steps in recipe.stages for _ in range(steps)]

    def step_loss(step: int, _generator: torch.Generator) -> torch.Tensor:
        length, batch = stage_of_step[step]
        examples = [
            training_example(stream, length + 1, rng, recipe.answer_weight, recipe.queries) for _ in range(batch)
        ]
        return weighted_loss(model, [e[0] for e in examples], [e[1] for e in examples])

    schedule = Schedule(recipe.lr, len(stage_of_step), warmup=recipe.warmup, weight_decay=0.1, betas=(0.9, 0.95),
                        clip=1.0)  # fmt: skip
    result = train(model.parameters(), step_loss, schedule, seed=recipe.seed, modules=[model], name=name, log_every=10)
    bundle = replace(base, model=model)
    checks = {
        length: retrieval_accuracy(model, retrieval_probes(bundle, recipe.check_probes, length, seed=1), 1)[
            "retrieval_accuracy"
        ]
        for length in recipe.checks
    }
    manifest = {
        "name": name,
        "source": f"zoo:{name}",
        "tokenizer": "bytes",
        "config": asdict(model.config),
        "recipe": asdict(recipe),
        "base": f"zoo:{recipe.base}",
        "params": count_parameters(model),
        "note": "long-context fine-tune with passkey retrieval (executors/families/longctx/finetune.py)",
        "train_seconds": round(result.seconds, 1),
        "final_train_loss": round(result.last_loss, 4),
        "retrieval_accuracy_at": {str(k): v for k, v in checks.items()},
        "torch": torch.__version__,
        "threads": 1,
    }
    return model, manifest
