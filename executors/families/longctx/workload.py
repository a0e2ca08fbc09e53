"""Long-context workload: key-value retrieval hidden in corpus text.

A *pair* is one reserved key byte followed by a 4-digit value; it is inserted into ordinary
corpus text (the haystack). A *query* repeats a key later on, and the model must continue with
that key's value. Key bytes are ones the stdlib corpus never contains (a test checks), so a key
is unambiguous and finding it is purely a long-range lookup — what token-sparse attention such
as Double Sparsity must not lose. Quality at a context length = retrieval accuracy (exact
match of the greedily generated value) plus held-out perplexity over windows of that length.

The long zoo LMs that can do it are fine-tuned in `finetune.py`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from executors.families.lm.workloads import MAX_TOKENS, LMWorkload
from executors.registry import ModelBundle, bounded

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
    deep = [h for h, p in zip(first_byte, probes, strict=False) if p.depth < 0.5]
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

    prompt_len: int = bounded(1024, 8, MAX_TOKENS)
    gen_len: int = bounded(16, 4, 4096)
    probes: int = bounded(8, 1, 256)  # retrieval probes scored per method (untimed)
    ppl_windows: int = bounded(2, 1, 64)  # held-out windows of prompt_len tokens for perplexity

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


def parse_grid(text: str) -> list[LongContextWorkload]:
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


def describe(workload: LongContextWorkload) -> str:
    return f"context {workload.prompt_len} b{workload.batch_size} g{workload.gen_len}"


def timed_prompts(bundle: ModelBundle, workload: LongContextWorkload) -> torch.Tensor:
    """The timed batch: the first `batch_size` retrieval prompts."""
    probes = retrieval_probes(bundle, workload.batch_size, workload.prompt_len)
    return torch.tensor([p.prompt for p in probes], dtype=torch.long)
