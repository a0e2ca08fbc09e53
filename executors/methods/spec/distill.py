"""Self-distillation data: the model's own greedy continuations of calibration prompts.

Medusa (arXiv 2401.10774, §2.3.2 "self-distillation") and parallel prompt decoding (arXiv
2405.18628) train their drafters on text the frozen model generated itself, not on a corpus:
a draft is accepted when it equals what the model would have produced, and on the model's
own greedy output that is a deterministic function of the prefix — which a head reading the
hidden state can learn, whereas corpus text continues in ways the model itself would not.
Prompts come from the calibration (training) split only; held-out text is never seen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from executors.families.lm.workloads import calibration_windows
from executors.methods.spec.engine import decoder_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generations:
    """Greedy continuations with what the model computed along the way."""

    tokens: torch.Tensor  # [N, gen_len]: the continuation of each prompt
    hidden: torch.Tensor  # [N, gen_len + 1, D]: final hidden states from the last prompt token on
    argmax: torch.Tensor  # [N, gen_len + 1]: the model's argmax there (argmax[:, :-1] == tokens)
    seconds: float  # wall time (part of a drafter's training cost)


@torch.no_grad()  # not inference mode: the hidden states feed a drafter's autograd later
def greedy_with_hidden(model, prompts: torch.Tensor, gen_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden [B, gen_len + 1, D], argmax [B, gen_len + 1]) of greedy decoding with a KV cache,
    from the last prompt token on: the states a verify forward sees at the same positions."""
    batch, prompt_len = prompts.shape
    cache = decoder_of(model).new_cache(batch, prompt_len + gen_len + 1)
    logits, hidden = model(prompts, cache, return_hidden=True)
    hiddens, argmax = [hidden[:, -1:].float()], [logits[:, -1:].argmax(-1)]
    for _ in range(gen_len):
        logits, hidden = model(argmax[-1], cache, return_hidden=True)
        hiddens.append(hidden.float())
        argmax.append(logits.argmax(-1))
    return torch.cat(hiddens, 1), torch.cat(argmax, 1)


def self_generations(bundle, count: int, prompt_len: int, gen_len: int, batch: int) -> Generations:
    """`count` calibration prompts of `prompt_len` tokens, each continued greedily for `gen_len` tokens."""
    prompts = calibration_windows(bundle, count, prompt_len)
    if len(prompts) == 0:
        raise ValueError(f"no calibration text has {prompt_len} tokens to prompt with")
    started = time.perf_counter()
    pieces = [greedy_with_hidden(bundle.model, chunk, gen_len) for chunk in prompts.split(batch)]
    hidden, argmax = torch.cat([h for h, _ in pieces]), torch.cat([a for _, a in pieces])
    seconds = time.perf_counter() - started
    log.info("self-distillation: %d continuations of %d tokens in %.1f s", len(prompts), gen_len, seconds)
    return Generations(argmax[:, :-1], hidden, argmax, seconds)
