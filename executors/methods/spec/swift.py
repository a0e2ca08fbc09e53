"""`lm.spec.swift`: on-the-fly self-speculative decoding by layer skipping.

Paper: Xia et al., "SWIFT: On-the-Fly Self-Speculative Decoding for LLM Inference
Acceleration" (arXiv 2410.06916). The draft model is the model itself with a set of
intermediate layers skipped; the full model verifies. No training, no extra weights.

The two parts of the paper, as built here:
- Context-based layer-set optimisation. The runner serves one input stream; during its first
  decoding steps (the optimisation phase) each step first evaluates a few candidate skip sets
  and drafts with the best so far. A candidate is scored by parallel drafting over the recent
  context: one forward of the skipping model over the last `search_window` tokens, counting how
  often its argmax equals the full model's argmax there (the paper uses the LLM-generated tokens
  as ground truth; we also use the prompt positions, whose full-model argmax the prefill gives
  for free). Candidates come from random search first, then from Bayesian optimisation (a
  Gaussian process over skip masks, upper-confidence-bound acquisition). Once `search_trials`
  candidates are spent the set is fixed for the rest of the stream (acceleration phase).
- Confidence-aware drafting: drafting stops early once the draft's top probability falls
  below `confidence_threshold` (for a batch: the least confident row).

Deviations, said plainly: our decoder skips whole layers (the paper searches attention and
MLP sub-layers separately); the first layer always runs; the paper's top-k tree of
draft candidates is not built (chain drafts only). Greedy output equals the baseline's; under
sampling, drafts are drawn from the skipping model and verified by speculative sampling.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch

from executors.methods.spec.engine import (
    Draft,
    SpeculativeMethod,
    decoder_of,
    probabilities,
    speculative_generate,
)
from executors.registry import MethodConfig, bounded, register_method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwiftConfig(MethodConfig):
    skip_ratio: float = 0.5  # fraction of all layers the draft skips
    max_draft_len: int = bounded(6, 1, 32)
    confidence_threshold: float = 0.6  # stop drafting below this top probability
    search_trials: int = bounded(24, 0, 1000)  # candidate skip sets evaluated over the stream (0: fixed uniform set)
    search_random: int = bounded(8, 0, 1000)  # of those, random ones before Bayesian optimisation starts
    trials_per_step: int = bounded(2, 1, 64)  # candidates evaluated before each decoding step while searching
    search_window: int = bounded(48, 1, 4096)  # recent context tokens a candidate is scored on
    version: int = 1


def skippable_layers(n_layers: int) -> list[int]:
    """Layer 0 always runs: it turns token embeddings into the features every later layer reads."""
    return list(range(1, n_layers))


def skip_count(n_layers: int, ratio: float) -> int:
    return min(round(ratio * n_layers), len(skippable_layers(n_layers)))


def uniform_skip_set(n_layers: int, count: int) -> frozenset[int]:
    """Evenly spread skips: the paper's observation that plain uniform skipping already drafts well."""
    candidates = skippable_layers(n_layers)
    if count == 0:
        return frozenset()
    step = len(candidates) / count
    return frozenset(candidates[int(i * step + step / 2)] for i in range(count))


@dataclass
class LayerSetSearch:
    """Random search then GP-UCB Bayesian optimisation over fixed-size skip sets."""

    n_layers: int
    count: int
    random_trials: int
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    tried: list[frozenset[int]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    @property
    def best(self) -> frozenset[int]:
        if not self.scores:
            return uniform_skip_set(self.n_layers, self.count)
        return self.tried[max(range(len(self.scores)), key=self.scores.__getitem__)]

    @property
    def exhausted(self) -> bool:
        return len(self.tried) >= math.comb(len(skippable_layers(self.n_layers)), self.count)

    def _random_set(self) -> frozenset[int]:
        layers = skippable_layers(self.n_layers)
        order = torch.randperm(len(layers), generator=self.generator)[: self.count].tolist()
        return frozenset(layers[i] for i in order)

    def _neighbour(self, base: frozenset[int]) -> frozenset[int]:
        """Swap one skipped layer for one that runs."""
        outside = [layer for layer in skippable_layers(self.n_layers) if layer not in base]
        if not outside or not base:
            return base
        inside = sorted(base)
        drop = inside[int(torch.randint(len(inside), (1,), generator=self.generator))]
        add = outside[int(torch.randint(len(outside), (1,), generator=self.generator))]
        return (base - {drop}) | {add}

    def _mask(self, sets: list[frozenset[int]]) -> torch.Tensor:
        masks = torch.zeros(len(sets), self.n_layers)
        for row, skip in enumerate(sets):
            masks[row, sorted(skip)] = 1.0
        return masks

    def propose(self) -> frozenset[int]:
        if not self.tried:
            return uniform_skip_set(self.n_layers, self.count)
        pool = [self._random_set() for _ in range(32)] + [self._neighbour(self.best) for _ in range(32)]
        pool = [s for s in dict.fromkeys(pool) if s not in self.tried]
        if not pool:  # the sampled pool missed the few untried sets left
            return self._random_set()
        if len(self.tried) < self.random_trials:
            return pool[0]
        return pool[int(self._ucb(pool).argmax())]

    def _ucb(self, pool: list[frozenset[int]]) -> torch.Tensor:
        """GP posterior (RBF kernel on skip masks) mean + 2 standard deviations."""
        seen, new = self._mask(self.tried), self._mask(pool)
        scale = 2.0 * max(self.count, 1)  # squared length-scale: a couple of swaps apart
        k_seen = torch.exp(-torch.cdist(seen, seen).pow(2) / scale)
        k_new = torch.exp(-torch.cdist(new, seen).pow(2) / scale)
        y = torch.tensor(self.scores)
        centre = y.mean()
        solve = torch.linalg.solve(k_seen + 1e-3 * torch.eye(len(y)), torch.stack((y - centre,)).T)
        mean = centre + (k_new @ solve).squeeze(-1)
        var_weights = torch.linalg.solve(k_seen + 1e-3 * torch.eye(len(y)), k_new.T)
        var = (1.0 - (k_new * var_weights.T).sum(-1)).clamp_min(1e-9)
        return mean + 2.0 * var.sqrt()

    def record(self, skip: frozenset[int], score: float) -> None:
        self.tried.append(skip)
        self.scores.append(score)


class SwiftProposer:
    def __init__(self, model, config: SwiftConfig, search: LayerSetSearch):
        self.model, self.config, self.search = model, config, search
        self.skip = search.best
        self.context: torch.Tensor | None = None  # tokens already in the cache
        self.targets: torch.Tensor | None = None  # full model's argmax after each of them
        self.pending: torch.Tensor | None = None

    def start(self, prompts, logits, hidden, counts) -> None:
        self.context, self.targets = prompts, logits.argmax(-1)
        counts.extra.update(search_trials=0, search_s=0.0)

    def _searching(self) -> bool:
        return len(self.search.tried) < self.config.search_trials and not self.search.exhausted

    def _optimise(self, counts) -> None:
        """One optimisation step of the paper: score a few candidates on the current context."""
        began = time.perf_counter()
        assert self.context is not None and self.targets is not None, "start() sets the scoring context"
        window = self.context[:, -self.config.search_window :]
        wanted = self.targets[:, -self.config.search_window :]
        for _ in range(self.config.trials_per_step):
            if not self._searching():
                break
            candidate = self.search.propose()
            guesses = self.model(window, skip_layers=candidate).argmax(-1)
            counts.draft_passes += 1
            self.search.record(candidate, float((guesses == wanted).float().mean()))
            counts.extra["search_trials"] += 1
        self.skip = self.search.best
        counts.extra["search_s"] += time.perf_counter() - began

    def propose(self, cache, pending, sampling, temperature, generator, counts) -> Draft:
        self.pending = pending
        if self._searching():
            self._optimise(counts)
        start, token = cache.length, pending
        tokens, probs = [], []
        for _ in range(self.config.max_draft_len):
            logits = self.model(token, cache, skip_layers=self.skip)[:, -1]
            counts.draft_passes += 1
            confidence = torch.softmax(logits, dim=-1).amax(-1).min()
            if sampling == "greedy":
                token = logits.argmax(-1, keepdim=True)
            else:
                probs.append(probabilities(logits, temperature))
                token = torch.multinomial(probs[-1], 1, generator=generator)
            tokens.append(token)
            if confidence < self.config.confidence_threshold:
                break
        cache.crop(start)  # the skipped layers never wrote these slots; verification rewrites all
        return Draft(tokens=torch.cat(tokens, dim=1), probs=torch.stack(probs, dim=1) if probs else None)

    def observe(self, verified, sampling, temperature, generator) -> None:
        """Keeps the scoring context: tokens now in the cache and the full model's argmax after each."""
        keep = verified.kept.shape[1]
        assert self.context is not None and self.targets is not None and self.pending is not None, "set by propose()"
        in_cache = torch.cat((self.pending, verified.emitted[:, :-1]), dim=1)
        window = self.config.search_window
        self.context = torch.cat((self.context, in_cache), dim=1)[:, -window:]
        self.targets = torch.cat((self.targets, verified.logits[:, :keep].argmax(-1)), dim=1)[:, -window:]


@dataclass
class SwiftRunner:
    """One input stream: the layer-set search carries over from one generate call to the next."""

    model: torch.nn.Module
    config: SwiftConfig
    search: LayerSetSearch

    def generate(
        self,
        prompts: torch.Tensor,
        max_new_tokens: int,
        *,
        sampling: str = "greedy",
        temperature: float = 1.0,
        seed: int = 0,
    ):
        proposer = SwiftProposer(self.model, self.config, self.search)
        generation = speculative_generate(
            self.model,
            proposer,
            prompts,
            max_new_tokens,
            width=self.config.max_draft_len,
            sampling=sampling,
            temperature=temperature,
            seed=seed,
        )
        generation.stats["skip_layers"] = sorted(proposer.skip)
        generation.stats["best_match_score"] = max(self.search.scores, default=None)
        return generation


@register_method(
    "lm.spec.swift",
    SwiftConfig,
    category="lm-decode",
    families=("lm",),
    changes=("forward_passes",),
    paper="SWIFT: On-the-Fly Self-Speculative Decoding for LLM Inference Acceleration",
    arxiv="2410.06916",
    catalogue_row=19,
    lossless=True,
)
class Swift(SpeculativeMethod):
    def supports(self, bundle, device):
        reason = super().supports(bundle, device)
        if reason is None and decoder_of(bundle.model).config.n_layers < 2:
            reason = "needs at least 2 layers: the draft skips some but always runs the first"
        return reason

    def apply(self, bundle, config):
        if not 0.0 < config.skip_ratio < 1.0 or config.max_draft_len < 1:
            raise ValueError("lm.spec.swift: skip_ratio must be in (0, 1) and max_draft_len ≥ 1")
        n_layers = decoder_of(bundle.model).config.n_layers
        count = skip_count(n_layers, config.skip_ratio)
        search = LayerSetSearch(n_layers, count, config.search_random)
        return SwiftRunner(bundle.model, config, search)
