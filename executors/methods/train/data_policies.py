"""Choices of training windows shared by the data methods (quality filter, one-pass regime,
continual subset and mixture): top-rated chunks of a text pool, and window sources over them."""

from __future__ import annotations

import torch

from executors.families.training import data
from executors.families.training.tasks import TokenData, Windows


def top_chunks(domain: data.TokenDomain, tokens: int) -> torch.Tensor:
    """The best-rated CHUNK-sized pieces of the pool, as many as hold `tokens` tokens, in pool order."""
    count = max(1, min(len(domain.quality), tokens // data.CHUNK))
    return torch.sort(torch.topk(domain.quality, count).indices).values


def windows(domain: data.TokenDomain, chunks: torch.Tensor, one_pass: bool = False) -> TokenData:
    return TokenData(((Windows(domain.train, chunks, one_pass), 1.0),))
