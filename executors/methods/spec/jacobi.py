"""`lm.parallel.jacobi`: Speculative Jacobi Decoding.

Paper: Teng et al., "Accelerating Auto-regressive Text-to-Image Generation with Training-free
Speculative Jacobi Decoding" (arXiv 2410.01699). No draft model: a window of guessed tokens
follows the pending token; one forward of the model over [pending, window] both verifies the
window and refines it (a Jacobi fixed-point iteration). Verification uses the speculative
sampling criterion, so sampled text keeps the model's distribution (the paper's point: plain
Jacobi decoding only converges under greedy decoding); under greedy it is exact match.

After a step that kept m window tokens, the tokens behind the rejection are replaced by what
this forward predicted for them (conditioned on the stale guess before them — the Jacobi
update) and the window is topped up with uniformly random tokens, the paper's initialisation.
A random token enters with a point-mass proposal (see `executors.methods.spec.engine`).
Batches: all rows keep the batch minimum of accepted tokens (lossless, see the engine).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from executors.methods.spec.engine import (
    Draft,
    SpeculativeMethod,
    decoder_of,
    point_mass,
    probabilities,
    speculative_generate,
)
from executors.registry import MethodConfig, bounded, register_method


@dataclass(frozen=True)
class JacobiConfig(MethodConfig):
    window: int = bounded(4, 1, 32)  # guessed tokens verified and refined per forward
    version: int = 1


class JacobiProposer:
    def __init__(self, window: int, vocab_size: int, seed: int):
        self.window, self.vocab_size = window, vocab_size
        # initial guesses are random even under greedy decoding; seeded so runs repeat
        self.init_generator = torch.Generator().manual_seed(seed)
        self.tokens: torch.Tensor | None = None
        self.probs: torch.Tensor | None = None

    def _random(self, batch: int, count: int, device: torch.device) -> torch.Tensor:
        return torch.randint(self.vocab_size, (batch, count), generator=self.init_generator).to(device)

    def start(self, prompts, logits, hidden, counts) -> None:
        self.tokens = self._random(prompts.shape[0], self.window, prompts.device)
        self.probs = point_mass(self.tokens, self.vocab_size)

    def propose(self, cache, pending, sampling, temperature, generator, counts) -> Draft:
        assert self.tokens is not None, "start() makes the first guesses"
        return Draft(tokens=self.tokens, probs=self.probs if sampling != "greedy" else None)

    def observe(self, verified, sampling, temperature, generator) -> None:
        refreshed = verified.logits[:, verified.kept.shape[1] :]  # predictions behind the rejection
        batch = refreshed.shape[0]
        fresh = self._random(batch, self.window - refreshed.shape[1], refreshed.device)
        if sampling == "greedy":
            self.tokens = torch.cat((refreshed.argmax(-1), fresh), dim=1)
            return
        probs = probabilities(refreshed, temperature)
        drawn = torch.multinomial(probs.reshape(-1, self.vocab_size), 1, generator=generator)
        self.tokens = torch.cat((drawn.view(batch, -1), fresh), dim=1)
        self.probs = torch.cat((probs, point_mass(fresh, self.vocab_size)), dim=1)


@dataclass
class JacobiRunner:
    model: torch.nn.Module
    config: JacobiConfig

    def generate(
        self,
        prompts: torch.Tensor,
        max_new_tokens: int,
        *,
        sampling: str = "greedy",
        temperature: float = 1.0,
        seed: int = 0,
    ):
        vocab = decoder_of(self.model).config.vocab_size
        proposer = JacobiProposer(self.config.window, vocab, seed)
        return speculative_generate(
            self.model,
            proposer,
            prompts,
            max_new_tokens,
            width=self.config.window,
            sampling=sampling,
            temperature=temperature,
            seed=seed,
        )


@register_method(
    "lm.parallel.jacobi",
    JacobiConfig,
    category="lm-decode",
    families=("lm",),
    changes=("forward_passes",),
    paper="Accelerating Auto-regressive Text-to-Image Generation with Training-free Speculative Jacobi Decoding",
    arxiv="2410.01699",
    catalogue_row=23,
    lossless=True,
)
class SpeculativeJacobi(SpeculativeMethod):
    def apply(self, bundle, config):
        if config.window < 1:
            raise ValueError("lm.parallel.jacobi: window must be ≥ 1")
        return JacobiRunner(bundle.model, config)
