"""The stream family's runner protocol: requests in, a served stream out.

A serving runner (`executors/methods/serve/engine.py`) takes a list of requests with arrival
times and serves them as they arrive; the result holds each request's state (its output and
the time each token was emitted) and the schedule the engine ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from torch import nn


@dataclass(frozen=True)
class Request:
    prompt: tuple[int, ...]
    max_new_tokens: int
    arrival_s: float = 0.0


@dataclass
class RequestState:
    index: int
    request: Request
    blocks: list[int] = field(default_factory=list)
    kv_len: int = 0  # positions whose keys/values are in the blocks
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache
    chunks: int = 0  # forwards that carried part of this prompt
    block_hashes: list[int] = field(default_factory=list)  # prefix keys of the full blocks so far
    registered: int = 0  # full blocks already offered to the prefix cache
    admitted_while_running: bool = False
    output: list[int] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)

    @property
    def tokens(self) -> list[int]:
        return list(self.request.prompt) + self.output

    @property
    def in_prefill(self) -> bool:
        return self.kv_len < len(self.request.prompt)


@dataclass
class StreamResult:
    requests: list[RequestState]
    schedule: list[dict]  # per iteration: its end time, the decoding requests, the prefill pieces
    prefill_tokens_computed: int
    peak_blocks: int
    block_bytes: int
    wall_s: float

    @property
    def generated_tokens(self) -> int:
        return sum(len(r.output) for r in self.requests)


class ServeRunner(Protocol):
    model: nn.Module

    def serve(self, requests: list[Request], max_batch: int, **sampling) -> StreamResult: ...
