"""The LM family's runner protocol and plain KV-cache decoding, the loop every
non-speculative method runs on its own model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from executors.registry import unwrap


@dataclass
class Generation:
    tokens: torch.Tensor  # [B, max_new_tokens]: exactly that many, no early stop on EOS
    forward_passes: int
    stats: dict = field(default_factory=dict)  # acceptance_rate, mean_accepted_len, …


class GenerateRunner(Protocol):
    model: torch.nn.Module  # the (possibly transformed) model, for perplexity and memory figures

    def generate(
        self, prompts: torch.Tensor, max_new_tokens: int, *, sampling: str = "greedy", temperature: float = 1.0,
        seed: int = 0,
    ) -> Generation: ...  # fmt: skip


def next_tokens(
    logits: torch.Tensor, sampling: str, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    """[B, V] logits → [B] tokens: argmax, or a draw from softmax(logits / temperature)."""
    if sampling == "greedy":
        return logits.argmax(dim=-1)
    if sampling != "sample":
        raise ValueError(f"sampling must be 'greedy' or 'sample', not {sampling!r}")
    probs = torch.softmax(logits / max(temperature, 1e-5), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sampling_generator(sampling: str, seed: int, device: torch.device) -> torch.Generator | None:
    if sampling == "greedy":
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


@dataclass
class PlainDecoder:
    """Prefill the prompt in one pass, then one forward per new token."""

    model: torch.nn.Module
    stats: dict = field(default_factory=dict)  # fixed facts reported with every generation

    @torch.inference_mode()
    def generate(
        self,
        prompts: torch.Tensor,
        max_new_tokens: int,
        *,
        sampling: str = "greedy",
        temperature: float = 1.0,
        seed: int = 0,
    ) -> Generation:
        batch, prompt_len = prompts.shape
        model = unwrap(self.model)
        cache = model.new_cache(batch, prompt_len + max_new_tokens)  # type: ignore[operator]  # every lm model has one
        generator = sampling_generator(sampling, seed, prompts.device)
        out = torch.empty(batch, max_new_tokens, dtype=torch.long, device=prompts.device)
        logits = self.model(prompts, cache)[:, -1]
        for step in range(max_new_tokens):
            token = next_tokens(logits, sampling, temperature, generator)
            out[:, step] = token
            if step + 1 < max_new_tokens:
                logits = self.model(token[:, None], cache)[:, -1]
        return Generation(tokens=out, forward_passes=max_new_tokens, stats=dict(self.stats))
