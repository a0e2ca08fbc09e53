"""Long-context workload: key-value retrieval hidden in corpus text, and the long zoo LM.

A *pair* is one reserved key byte followed by a 4-digit value; it is inserted into ordinary
corpus text (the haystack). A *query* repeats a key later on, and the model must continue with
that key's value. Key bytes are ones the stdlib corpus never contains (a test checks), so a key
is unambiguous and finding it is purely a long-range lookup — what token-sparse attention such
as Double Sparsity must not lose. Quality at a context length = retrieval accuracy (exact
match of the greedily generated value) plus held-out perplexity over windows of that length.

The zoo LMs were trained on 128-token windows. `lm-1m-long` fine-tunes `lm-1m` to 8192
positions on the training split with pairs and queries mixed in (answer tokens up-weighted),
in progressive lengths; seeded, single-threaded and cached like every zoo model.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from executors.lm import DecoderLM, count_parameters
from executors.registry import ModelBundle, Runner
from executors.workloads import LMWorkload, perplexity

log = logging.getLogger(__name__)

# Bytes that never occur in the stdlib sources (tests/executors/test_longctx.py checks it).
UNUSED_BYTES = (*range(198, 226), *range(227, 256))
QUERY_BYTE = UNUSED_BYTES[0]
PASSKEY_LEN = 4
CLASS_SIZE = 14
# Position i of a passkey takes one of 14 bytes of its own class: the key never collides with
# text, and which byte comes next is never ambiguous, so reading it back is pure retrieval.
PASSKEY_CLASSES = tuple(UNUSED_BYTES[1 + i * CLASS_SIZE : 1 + (i + 1) * CLASS_SIZE] for i in range(PASSKEY_LEN))


# ---- data -------------------------------------------------------------------------------


def token_stream(texts: tuple[str, ...], tokenizer) -> list[int]:
    return [t for text in texts for t in tokenizer.encode(text) + [tokenizer.eos_id]]


def passkey(rng: random.Random) -> list[int]:
    return [rng.choice(byte_class) for byte_class in PASSKEY_CLASSES]


def _weave(haystack: list[int], inserts: list[tuple[int, list[int], list[float]]]) -> tuple[list[int], list[float]]:
    """Inserts token runs at haystack offsets (stable for equal offsets); weights travel along."""
    tokens, weights, cursor = [], [], 0
    for offset, run, run_weights in sorted(inserts, key=lambda item: item[0]):
        tokens += haystack[cursor:offset] + run
        weights += [1.0] * (offset - cursor) + run_weights
        cursor = offset
    tokens += haystack[cursor:]
    weights += [1.0] * (len(haystack) - cursor)
    return tokens, weights


def training_example(
    stream: list[int], length: int, rng: random.Random, answer_weight: float, queries: int = 2
) -> tuple[list[int], list[float]]:
    """`length` tokens of corpus text with one passkey and later queries (query byte + key).

    Weights are per token: `answer_weight` on a key a query must read back (a few tokens per
    sequence carry the retrieval signal, so they are up-weighted), 1 elsewhere.
    """
    key = passkey(rng)
    filler = length - PASSKEY_LEN - queries * (1 + PASSKEY_LEN)
    start = rng.randrange(len(stream) - filler)
    at = rng.randrange(filler)
    inserts = [(at, key, [1.0] * PASSKEY_LEN)]
    inserts += [
        (rng.randrange(at, filler + 1), [QUERY_BYTE] + key, [1.0] + [answer_weight] * PASSKEY_LEN)
        for _ in range(queries)
    ]
    return _weave(stream[start : start + filler], inserts)


@dataclass(frozen=True)
class Probe:
    prompt: list[int]  # ends with the query byte
    answer: list[int]  # the passkey
    depth: float  # where the passkey sits, 0 = start of the context, 1 = end


def retrieval_probe(stream: list[int], context_len: int, rng: random.Random) -> Probe:
    filler = context_len - PASSKEY_LEN - 1
    if filler < 1:
        raise ValueError(f"a {context_len}-token context cannot hold a passkey and a query")
    start = rng.randrange(len(stream) - filler)
    key = passkey(rng)
    at = rng.randrange(filler)
    tokens, _ = _weave(stream[start : start + filler], [(at, key, [1.0] * PASSKEY_LEN)])
    return Probe(prompt=tokens + [QUERY_BYTE], answer=key, depth=at / filler)


def retrieval_probes(bundle: ModelBundle, count: int, context_len: int, seed: int = 0) -> list[Probe]:
    """Probes over held-out text, deterministic for (context length, seed)."""
    rng = random.Random(f"probes-{context_len}-{seed}")
    stream = token_stream(bundle.heldout_texts, bundle.tokenizer)
    return [retrieval_probe(stream, context_len, rng) for _ in range(count)]


# ---- quality ----------------------------------------------------------------------------


@torch.inference_mode()
def retrieval_accuracy(model: torch.nn.Module, probes: list[Probe], batch_size: int) -> dict:
    """Teacher-forced passkey read-back through the model's own forward, over all probes.

    Prompt + passkey go through `model` once; a passkey byte counts when it is the argmax where
    it comes next. `retrieval_accuracy` is the first byte — the one produced at the query, the
    long-range lookup itself; the later bytes are reported apart. Scoring the forward (not a
    generation) is what makes a sparse-attention model's selection count at the query position:
    Double Sparsity's forward applies it to every position, the paper's offline evaluation.
    """
    device = _device_of(model)
    hits = []
    for first in range(0, len(probes), batch_size):
        chunk = probes[first : first + batch_size]
        tokens = torch.tensor([p.prompt + p.answer[:-1] for p in chunk], dtype=torch.long, device=device)
        predicted = model(tokens)[:, -PASSKEY_LEN:].argmax(-1).cpu()
        hits += [predicted[i] == torch.tensor(p.answer) for i, p in enumerate(chunk)]
    first_byte = [bool(h[0]) for h in hits]
    deep = [h for h, p in zip(first_byte, probes) if p.depth < 0.5]
    return {
        "retrieval_accuracy": sum(first_byte) / len(hits),
        "retrieval_probes": len(hits),
        "retrieval_accuracy_first_half": sum(deep) / len(deep) if deep else None,
        "passkey_byte_accuracy": torch.stack(hits).float().mean().item(),
        "passkey_exact_match": sum(bool(h.all()) for h in hits) / len(hits),
    }


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(iter(model.state_dict().values())).device


def long_windows(bundle: ModelBundle, count: int, length: int) -> torch.Tensor:
    stream = token_stream(bundle.heldout_texts, bundle.tokenizer)
    stride = (len(stream) - length) // count
    return torch.tensor([stream[i * stride : i * stride + length] for i in range(count)], dtype=torch.long)


# ---- workload ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LongContextWorkload(LMWorkload):
    """Decode after a long passkey prompt. `prompt_len` is the context length (1k–8k)."""

    prompt_len: int = 1024
    gen_len: int = 16
    probes: int = 8  # retrieval probes scored per method (untimed)
    ppl_windows: int = 2  # held-out windows of prompt_len tokens for perplexity

    kind = "lm-longctx"

    def __post_init__(self):
        super().__post_init__()
        if min(self.probes, self.ppl_windows) < 1 or self.prompt_len < 2 * PASSKEY_LEN or self.gen_len < PASSKEY_LEN:
            raise ValueError(
                "probes and ppl_windows must be positive, prompt_len at least "
                f"{2 * PASSKEY_LEN} and gen_len at least {PASSKEY_LEN} (the passkey is scored)"
            )

    def shape(self) -> dict:
        return {**super().shape(), "kind": self.kind}

    def row(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "batch_size": self.batch_size,
            "prompt_len": self.prompt_len,
            "gen_len": self.gen_len,
            "sampling": self.sampling,
            "objective": self.objective,
            "params": {
                "temperature": self.temperature,
                "context_len": self.prompt_len,
                "probes": self.probes,
                "ppl_windows": self.ppl_windows,
            },
        }

    def prompts(self, bundle: ModelBundle) -> torch.Tensor:
        """The timed batch: the first `batch_size` retrieval prompts."""
        probes = retrieval_probes(bundle, self.batch_size, self.prompt_len)
        return torch.tensor([p.prompt for p in probes], dtype=torch.long)

    def quality(self, bundle: ModelBundle, runner: Runner) -> dict:
        """Passkey retrieval and held-out perplexity at this context, through the runner's model."""
        model = getattr(runner.model, "_orig_mod", runner.model)
        scores = retrieval_accuracy(model, retrieval_probes(bundle, self.probes, self.prompt_len), self.batch_size)
        windows = long_windows(bundle, self.ppl_windows, self.prompt_len + 1).to(_device_of(model))
        return {**scores, "longctx_perplexity": perplexity(model, windows, batch=1)}


def parse_longctx_workloads(text: str) -> list[LongContextWorkload]:
    """`context=1024,8192 batch=1 gen=16 probes=8`: one workload per combination."""
    axes = {"context": [1024], "batch": [1], "gen": [16], "probes": [8]}
    for part in text.split():
        key, _, values = part.partition("=")
        if key not in axes:
            raise ValueError(f"unknown longctx axis {key!r}; use context=, batch=, gen=, probes=")
        axes[key] = [int(v) for v in values.split(",")]
    return [
        LongContextWorkload(batch_size=b, prompt_len=c, gen_len=g, probes=p)
        for c in axes["context"]
        for b in axes["batch"]
        for g in axes["gen"]
        for p in axes["probes"]
    ]


# ---- the long zoo LM --------------------------------------------------------------------


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


def _train_step(model, optimizer, tokens: list[list[int]], weights: list[list[float]]) -> float:
    batch = torch.tensor(tokens)
    weight = torch.tensor(weights)[:, 1:]
    logits = model(batch[:, :-1])
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none")
    loss = (losses * weight.reshape(-1)).sum() / weight.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def finetune_long(name: str, root: Path | None = None, recipe: LongRecipe | None = None) -> tuple[DecoderLM, dict]:
    """Fine-tunes the recipe's base zoo LM on corpus text with retrieval pairs; returns (model, manifest)."""
    from executors.zoo import load_bundle

    recipe = recipe or LONG_RECIPES[name]
    base = load_bundle(f"zoo:{recipe.base}", root)
    torch.manual_seed(recipe.seed)
    model = DecoderLM(replace(base.model.config, max_seq_len=recipe.max_seq_len))
    model.load_state_dict(base.model.state_dict())
    stream = token_stream(base.calibration_texts, base.tokenizer)  # the training split
    rng = random.Random(recipe.seed)
    total = sum(steps for *_, steps in recipe.stages)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.1, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / recipe.warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
    )
    started, threads, step, loss = time.perf_counter(), torch.get_num_threads(), 0, float("nan")
    torch.set_num_threads(1)  # weights must not depend on the core count
    try:
        model.train()
        for length, batch, steps in recipe.stages:
            for _ in range(steps):
                examples = [
                    training_example(stream, length + 1, rng, recipe.answer_weight, recipe.queries)
                    for _ in range(batch)
                ]
                loss = _train_step(model, optimizer, [e[0] for e in examples], [e[1] for e in examples])
                schedule.step()
                step += 1
                if step % 10 == 0:
                    log.info("%s step %d/%d (length %d) loss %.3f", name, step, total, length, loss)
    finally:
        torch.set_num_threads(threads)
    model.eval()
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
        "note": "long-context fine-tune with passkey retrieval (executors/longctx.py)",
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_train_loss": round(loss, 4),
        "retrieval_accuracy_at": {str(k): v for k, v in checks.items()},
        "torch": torch.__version__,
        "threads": 1,
    }
    return model, manifest
