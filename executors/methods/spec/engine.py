"""The shared draft-then-verify engine behind SWIFT, Medusa and Speculative Jacobi Decoding.

One loop (`speculative_generate`) owns the KV cache; a method only proposes drafts (a chain,
or a token tree for greedy Medusa) and watches what got accepted. The full model verifies the
pending token plus all drafts in one forward; the accepted prefix is kept in the cache and the
rest is rolled back (chains: `KVCache.crop`; trees: the accepted path's slots are gathered to
the front first, `keep_cache_slots`).

Acceptance rules:
- greedy: a draft survives while it equals the full model's argmax; the model's argmax after
  the last survivor is emitted too, so every step yields ≥ 1 token and the output is the
  greedy baseline's, token for token;
- sample: speculative sampling (Leviathan et al. 2023, Chen et al. 2023): accept draft x with
  probability min(1, p(x)/q(x)); at the first rejection draw from norm(max(0, p − q)). This is
  exact for any proposal q fixed before the coin flips — including a point mass, which is how
  drafts that were not sampled (Jacobi's initial tokens) enter.

Batch rows verify together, so every row keeps the batch minimum m of accepted drafts plus one
more token. That stays lossless: each row's first m + 1 outputs of the sequential acceptance
procedure are already correct (drafts it accepted, or its own correction), and stopping that
procedure at a point chosen by other rows' independent draws does not bias what was emitted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import torch

from executors.families.lm.decoding import Generation, next_tokens, sampling_generator
from executors.families.lm.model import KVCache, decoder_of
from executors.registry import Method

log = logging.getLogger(__name__)


class SpeculativeMethod(Method):
    """What the three draft-then-verify methods share: where they sit in a composite and the model they need."""

    order = 100  # a decoding strategy: applies after weight transforms
    composes_with = frozenset({"quant.int8_dynamic", "quant.weight_only_int4"})

    def supports(self, bundle, device) -> str | None:
        if "kv_cache" not in bundle.capabilities:
            return "drafts and verifies on a KV cache that rolls back (executors.families.lm); this model has none"
        return None


def probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The sampling distribution the baseline draws from (same temperature floor)."""
    return torch.softmax(logits / max(temperature, 1e-5), dim=-1)


def point_mass(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """q for drafts that were chosen, not sampled: all mass on the chosen token."""
    return torch.nn.functional.one_hot(tokens, vocab_size).to(torch.float32)


def greedy_chain_accept(drafts: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """drafts [B, K], logits [B, K+1, V] → (accepted drafts per row [B], outputs [B, K+1]).

    outputs[:, i] is the token emitted at offset i by a row that accepted ≥ i drafts.
    """
    predictions = logits.argmax(dim=-1)
    matches = (drafts == predictions[:, :-1]).long()
    return matches.cumprod(dim=1).sum(dim=1), predictions


def sampled_chain_accept(
    drafts: torch.Tensor, draft_probs: torch.Tensor, target_probs: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling over a chain.

    drafts [B, K] drawn from draft_probs [B, K, V]; target_probs [B, K+1, V] from the verifier.
    Returns (accepted drafts per row [B], outputs [B, K+1]) like `greedy_chain_accept`.
    """
    batch, width = drafts.shape
    p_draft = target_probs[:, :width].gather(-1, drafts[..., None]).squeeze(-1)
    q_draft = draft_probs.gather(-1, drafts[..., None]).squeeze(-1)
    coins = torch.rand(batch, width, generator=generator, device=drafts.device)
    keep = (coins * q_draft <= p_draft).long()  # u ≤ p/q without dividing by a tiny q
    accepted = keep.cumprod(dim=1).sum(dim=1)
    residual = (target_probs[:, :width] - draft_probs).clamp_min(0.0)
    # p == q leaves no residual; then any draw from p is right (rejection had probability 0)
    empty = residual.sum(-1, keepdim=True) <= 0
    residual = torch.where(empty, target_probs[:, :width], residual)
    fallback = torch.cat((residual, target_probs[:, width:]), dim=1)  # bonus draw after all K
    rows = torch.arange(batch, device=drafts.device)
    chosen = fallback[rows, accepted]
    correction = torch.multinomial(chosen / chosen.sum(-1, keepdim=True), 1, generator=generator)
    outputs = torch.cat((drafts, torch.zeros_like(rows)[:, None]), dim=1)  # works for 0 drafts too
    outputs[rows, accepted] = correction.squeeze(-1)
    return accepted, outputs


@dataclass(frozen=True)
class TokenTree:
    """Topology of a draft tree; node 0 is the root (the pending token), parents[0] == -1.

    Parents precede children, so a tree's nodes can be fed to the model in index order.
    """

    parents: tuple[int, ...]

    def __post_init__(self):
        if not self.parents or self.parents[0] != -1:
            raise ValueError("node 0 must be the root (parent -1)")
        if any(not 0 <= p < i for i, p in enumerate(self.parents[1:], start=1)):
            raise ValueError("every parent must come before its child")

    @classmethod
    def chain(cls, length: int) -> TokenTree:
        return cls(tuple(range(-1, length)))

    @property
    def size(self) -> int:
        return len(self.parents)

    def depths(self) -> list[int]:
        depths = [0] * self.size
        for node in range(1, self.size):
            depths[node] = depths[self.parents[node]] + 1
        return depths

    def children(self) -> list[list[int]]:
        kids: list[list[int]] = [[] for _ in range(self.size)]
        for node in range(1, self.size):
            kids[self.parents[node]].append(node)
        return kids

    def attention_mask(self) -> torch.Tensor:
        """[N, N] bool: node i may attend node j iff j is i or one of its ancestors."""
        mask = torch.eye(self.size, dtype=torch.bool)
        for node in range(1, self.size):
            mask[node] |= mask[self.parents[node]]
        return mask


def greedy_tree_accept(
    tree: TokenTree, node_tokens: torch.Tensor, logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Longest root path whose every token is the full model's argmax at its parent.

    node_tokens [B, N] (column 0: the pending token), logits [B, N, V] from one tree-masked
    forward. Returns (path [B, m+1] node indices kept, all rows cut to the batch minimum m,
    emitted [B, m+1]: the accepted tokens after the root plus the argmax after the last).
    """
    predictions = logits.argmax(dim=-1).tolist()
    tokens = node_tokens.tolist()
    kids = tree.children()
    paths = []
    for row_tokens, row_predictions in zip(tokens, predictions, strict=False):
        walk = [0]
        while True:
            wanted = row_predictions[walk[-1]]
            follow = next((c for c in kids[walk[-1]] if row_tokens[c] == wanted), None)
            if follow is None:
                break
            walk.append(follow)
        paths.append(walk)
    keep = min(len(p) for p in paths)
    path = torch.tensor([p[:keep] for p in paths], dtype=torch.long, device=node_tokens.device)
    emitted = torch.cat((node_tokens.gather(1, path[:, 1:]), logits.argmax(dim=-1).gather(1, path[:, -1:])), dim=1)
    return path, emitted


def keep_cache_slots(cache: KVCache, start: int, nodes: torch.Tensor) -> None:
    """Moves the k/v of the kept tree nodes (per row, [B, n]) to slots start..start+n-1."""
    count = nodes.shape[1]
    for store in (cache.keys, cache.values):
        for layer in store:
            index = (start + nodes)[:, None, :, None].expand(-1, layer.shape[1], -1, layer.shape[3])
            layer[:, :, start : start + count] = layer.gather(2, index)
    cache.length = start + count


@dataclass(frozen=True)
class Draft:
    """What a method proposes after the pending token.

    tokens [B, K] for a chain (K may be 0: then the step is a plain decode step), or the
    N-1 non-root node tokens of `tree` in node order. probs [B, K, V]: the distribution each
    chain draft was drawn from — required when sampling; trees are greedy only.
    """

    tokens: torch.Tensor
    probs: torch.Tensor | None = None
    tree: TokenTree | None = None
    # Parallel prompt decoding feeds trained prompt tokens beside the drafts: the last
    # `appended` entries of `tokens` (or tree nodes) are such inputs — never accepted, never
    # kept in the cache — and `embeddings` [B, 1 + tokens, D] is what the model is fed.
    embeddings: torch.Tensor | None = None
    appended: int = 0

    def offered(self) -> int:
        """Draft tokens put to the verifier: a chain's length, a tree's depth."""
        if self.tree is None:
            return self.tokens.shape[1] - self.appended
        return max(self.tree.depths()[: self.tree.size - self.appended])


@dataclass
class Verified:
    """One verify step, as a method's `observe` sees it."""

    logits: torch.Tensor  # [B, K+1 or N, V] full-model logits over pending + drafts
    hidden: torch.Tensor  # [B, K+1 or N, D] final-norm hidden states, same positions
    kept: torch.Tensor  # [B, m+1] positions (chain offsets or tree nodes) kept in the cache
    emitted: torch.Tensor  # [B, m+1] tokens emitted; the last one is the new pending token


class Proposer(Protocol):
    def start(self, prompts: torch.Tensor, logits: torch.Tensor, hidden: torch.Tensor, counts: Counts) -> None: ...

    def propose(
        self,
        cache: KVCache,
        pending: torch.Tensor,
        sampling: str,
        temperature: float,
        generator: torch.Generator | None,
        counts: Counts,
    ) -> Draft: ...

    def observe(
        self, verified: Verified, sampling: str, temperature: float, generator: torch.Generator | None
    ) -> None: ...


@dataclass
class Counts:
    full_passes: int = 0  # full-model forwards, prefill included (as the baseline counts)
    draft_passes: int = 0  # cheaper forwards a method spends on drafting (layer-skip drafts)
    verify_steps: int = 0
    drafted: int = 0  # draft tokens offered to the verifier (chains: all; trees: the depth)
    accepted: int = 0
    extra: dict = field(default_factory=dict)

    def stats(self) -> dict:
        steps = max(self.verify_steps, 1)
        return {
            "acceptance_rate": self.accepted / self.drafted if self.drafted else 0.0,
            "mean_accepted_len": (self.accepted + self.verify_steps) / steps,
            "full_passes": self.full_passes,
            "draft_passes": self.draft_passes,
            "verify_steps": self.verify_steps,
            "drafted": self.drafted,
            "accepted": self.accepted,
            **self.extra,
        }


@torch.inference_mode()
def speculative_generate(
    model,
    proposer: Proposer,
    prompts: torch.Tensor,
    max_new_tokens: int,
    *,
    width: int,
    sampling: str = "greedy",
    temperature: float = 1.0,
    seed: int = 0,
) -> Generation:
    """Exactly max_new_tokens tokens per row; `width` bounds the nodes one verify step feeds."""
    batch, prompt_len = prompts.shape
    counts = Counts()
    generator = sampling_generator(sampling, seed, prompts.device)
    # the last verify step starts at prompt_len + max_new_tokens - 2 and feeds 1 + width tokens
    cache = decoder_of(model).new_cache(batch, prompt_len + max_new_tokens + width)
    logits, hidden = model(prompts, cache, return_hidden=True)
    counts.full_passes += 1
    pending = next_tokens(logits[:, -1], sampling, temperature, generator)[:, None]
    proposer.start(prompts, logits, hidden, counts)
    pieces, produced = [pending], 1
    while produced < max_new_tokens:
        draft = proposer.propose(cache, pending, sampling, temperature, generator, counts)
        verified = _verify(model, cache, pending, draft, sampling, temperature, generator)
        counts.full_passes += 1
        counts.verify_steps += 1
        counts.drafted += draft.offered()
        counts.accepted += verified.emitted.shape[1] - 1
        proposer.observe(verified, sampling, temperature, generator)
        pending = verified.emitted[:, -1:]
        pieces.append(verified.emitted)
        produced += verified.emitted.shape[1]
    tokens = torch.cat(pieces, dim=1)[:, :max_new_tokens]
    return Generation(tokens=tokens, forward_passes=counts.full_passes + counts.draft_passes, stats=counts.stats())


def _verify(
    model,
    cache: KVCache,
    pending: torch.Tensor,
    draft: Draft,
    sampling: str,
    temperature: float,
    generator: torch.Generator | None,
) -> Verified:
    start = cache.length
    fed = torch.cat((pending, draft.tokens), dim=1)
    inputs = {} if draft.embeddings is None else {"embeddings": draft.embeddings}
    if draft.tree is not None:
        if sampling != "greedy":
            raise ValueError("tree verification is greedy only; propose a chain when sampling")
        positions = start + torch.tensor(draft.tree.depths(), device=fed.device)
        logits, hidden = model(
            fed,
            cache,
            return_hidden=True,
            positions=positions,
            tree_mask=draft.tree.attention_mask().to(fed.device),
            **inputs,
        )
        judged = fed.clone()
        judged[:, fed.shape[1] - draft.appended :] = -1  # no argmax equals -1: never accepted
        kept, emitted = greedy_tree_accept(draft.tree, judged, logits)
        keep_cache_slots(cache, start, kept)
        return Verified(logits, hidden, kept, emitted)
    logits, hidden = model(fed, cache, return_hidden=True, **inputs)
    drafts = draft.tokens[:, : draft.tokens.shape[1] - draft.appended]
    judged = logits[:, : drafts.shape[1] + 1]
    if sampling == "greedy":
        accepted, outputs = greedy_chain_accept(drafts, judged)
    else:
        if draft.probs is None:
            raise ValueError("sampled verification needs the draft distribution")
        accepted, outputs = sampled_chain_accept(drafts, draft.probs, probabilities(judged, temperature), generator)
    keep = int(accepted.min()) + 1
    cache.crop(start + keep)
    kept = torch.arange(keep, device=fed.device).expand(fed.shape[0], keep)
    return Verified(logits, hidden, kept, outputs[:, :keep])
