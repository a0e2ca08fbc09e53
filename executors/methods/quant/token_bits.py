"""EdgeQAT's token importance-aware adaptive quantisation: fewer bits for the tokens that matter least.

The paper (arXiv 2402.10787, §3.3) and the authors' code (`modeling_llama_qat_mix.py`) score each
token in every layer by the attention logit it gives the first token, summed over heads, and
quantise the activations of the lower-scoring share of tokens (half by default) with fewer bits
(A4 instead of A8): in that layer the value states and the MLP inputs, in the next layer the
attention input, the queries and the keys.

Ranking within a sequence does not work token by token with a KV cache, so here each layer's
threshold is calibrated once — the `low_fraction` quantile of its scores on calibration windows
— and a token is "low" when its score falls below it, in training and deployment alike.
Activation quantisation is dynamic (per token, or per tensor as a dynamic int8 kernel does); a
mask only chooses between two bit widths row by row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from executors.methods.quant.fakequant import fake_quant_per_token


@dataclass
class TokenBits:
    """Which tokens are low-importance, shared by one model's layers during a forward.

    Each attention sets `current` (its own tokens, read by its values and its block's MLP) after
    moving the previous layer's mask to `previous` (read by its input, queries and keys)."""

    previous: torch.Tensor | None = None  # [B, T] bool
    current: torch.Tensor | None = None
    enabled: bool = True
    scores: list = field(default_factory=list)  # per layer, while calibrating thresholds

    def mask(self, role: str | None) -> torch.Tensor | None:
        if not self.enabled or role is None:
            return None
        return self.previous if role == "previous" else self.current


def importance(q: torch.Tensor, first_key: torch.Tensor) -> torch.Tensor:
    """[B, T]: each query token's attention logit to the first key, summed over heads.

    q [B, H, T, d]; first_key [B, H_kv, d] (grouped-query heads share a key)."""
    keys = first_key.repeat_interleave(q.shape[1] // first_key.shape[1], dim=1)
    return torch.einsum("bhtd,bhd->bt", q, keys) / q.shape[-1] ** 0.5


def mixed_fake_quant(x: torch.Tensor, bits: int, low_bits: int, low: torch.Tensor | None, per_token: bool):
    """Dynamic fake quantisation of x [B, T, D] at `bits`, with `low_bits` for the tokens where `low`."""
    high = fake_quant_per_token(x, bits) if per_token else fake_quant_per_tensor(x, bits)
    if low is None or low_bits == bits or not bool(low.any()):
        return high
    fewer = fake_quant_per_token(x, low_bits) if per_token else fake_quant_per_tensor(x, low_bits)
    return torch.where(low[..., None], fewer, high)


def fake_quant_per_tensor(x: torch.Tensor, bits: int) -> torch.Tensor:
    """What a dynamic int8 kernel does to its input: one asymmetric grid for the whole tensor."""
    return fake_quant_per_token(x.reshape(1, -1), bits).reshape(x.shape)
