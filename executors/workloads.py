"""LM generation workloads and their inputs: held-out prompts cut to an exact token length."""

from __future__ import annotations

import itertools
import weakref
from dataclasses import asdict, dataclass

import torch

from executors.registry import ModelBundle
from profiles.models import workload_id_for

SAMPLINGS = ("greedy", "sample")


def workload_from_fields(cls: type, data: dict):
    """A workload dataclass from its JSON fields ("kind" names the class, so it is dropped)."""
    known = {k: v for k, v in data.items() if k != "kind"}
    unknown = set(known) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown workload fields: {', '.join(sorted(unknown))}")
    return cls(**known)


@dataclass(frozen=True)
class LMWorkload:
    batch_size: int = 1
    prompt_len: int = 32
    gen_len: int = 32
    sampling: str = "greedy"
    temperature: float = 1.0
    objective: str = "latency"

    def __post_init__(self):
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, not {self.sampling!r}")
        if min(self.batch_size, self.prompt_len, self.gen_len) < 1:
            raise ValueError("batch_size, prompt_len and gen_len must be positive")

    @classmethod
    def from_json(cls, data: dict) -> LMWorkload:
        return workload_from_fields(cls, data)

    def shape(self) -> dict:
        shape = {"kind": "lm-generate", **asdict(self)}
        if self.sampling == "greedy":
            del shape["temperature"]  # irrelevant to greedy decoding: keep ids stable
        return shape

    @property
    def id(self) -> str:
        return workload_id_for(self.shape())

    def row(self) -> dict:
        """The Workload object that travels inside every profile record."""
        return {
            "id": self.id,
            "kind": "lm-generate",
            "batch_size": self.batch_size,
            "prompt_len": self.prompt_len,
            "gen_len": self.gen_len,
            "sampling": self.sampling,
            "objective": self.objective,
            "params": {"temperature": self.temperature},
        }

    def fits(self, bundle: ModelBundle) -> str | None:
        if bundle.spec.get("family") == "encoder":
            return f"{bundle.spec.get('source')} is an encoder: it embeds, it does not generate tokens"
        need = self.prompt_len + self.gen_len
        if need > bundle.model.config.max_seq_len:
            return (
                f"prompt + generation = {need} tokens exceeds the model's context of {bundle.model.config.max_seq_len}"
            )
        return None


def grid(batch_sizes, prompt_lens, gen_lens, sampling: str = "greedy") -> list[LMWorkload]:
    return [LMWorkload(b, p, g, sampling) for b, p, g in itertools.product(batch_sizes, prompt_lens, gen_lens)]


_ENCODED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _encoded_heldout(bundle: ModelBundle) -> tuple[tuple[int, ...], ...]:
    """Tokenised held-out chunks, remembered per tokenizer object (SmolLM2's takes a while)."""
    texts, encoded = _ENCODED.get(bundle.tokenizer, (None, None))
    if texts is not bundle.heldout_texts:
        encoded = tuple(tuple(bundle.tokenizer.encode(text)) for text in bundle.heldout_texts)
        _ENCODED[bundle.tokenizer] = (bundle.heldout_texts, encoded)
    return encoded


def heldout_prompts(bundle: ModelBundle, count: int, prompt_len: int, offset: int = 0) -> torch.Tensor:
    """`count` held-out prompts of exactly `prompt_len` tokens (so a batch needs no padding).

    Each held-out chunk long enough yields one prompt, in corpus order starting at `offset`;
    the list wraps around when more prompts are asked for than there are chunks.
    """
    usable = [tokens[:prompt_len] for tokens in _encoded_heldout(bundle) if len(tokens) >= prompt_len]
    if not usable:
        raise ValueError(f"no held-out text has {prompt_len} tokens")
    rows = [usable[(offset + i) % len(usable)] for i in range(count)]
    return torch.tensor(rows, dtype=torch.long)


def heldout_windows(bundle: ModelBundle, count: int, length: int) -> torch.Tensor:
    """Evenly spaced held-out windows for perplexity (one stream of all held-out tokens)."""
    stream = [t for tokens in _encoded_heldout(bundle) for t in tokens]
    stride = max(1, (len(stream) - length) // count)
    return torch.tensor([stream[i * stride : i * stride + length] for i in range(count)], dtype=torch.long)


@torch.inference_mode()
def perplexity(model: torch.nn.Module, windows: torch.Tensor, batch: int = 4) -> float:
    total, count = 0.0, 0
    for start in range(0, len(windows), batch):
        chunk = windows[start : start + batch]
        logits = model(chunk[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum"
        )
        total += loss.item()
        count += chunk[:, 1:].numel()
    return float(torch.exp(torch.tensor(total / count)))
