"""A small LLM serving engine over DecoderLM: paged KV blocks, iteration-level scheduling.

One engine runs every serving method; the methods only switch its scheduling options, so a
difference in the figures is the scheduling, not the code path:
- static batching (the reference): a batch is formed only when the engine is empty and runs
  until its last request finishes; requests arriving meanwhile wait;
- continuous batching (Orca's iteration-level scheduling): waiting requests join free slots at
  every iteration and finished ones leave at once;
- prefix caching (vLLM's automatic prefix caching / SGLang's RadixAttention): full KV blocks
  are keyed by a hash chain of the tokens up to them and reused by later prompts with that prefix;
- chunked prefill (Sarathi): an iteration has a token budget; decodes go first and prefills fill
  the rest, so a long prompt is split into chunks interleaved with other requests' decodes.

Every iteration is one forward over the packed tokens of all scheduled requests (Orca's
selective batching): the linear layers see one [tokens, dim] matrix, attention runs per
request against its own blocks. Batch invariance makes the methods bitwise lossless: CPU GEMMs
round a row differently depending on how many rows they see (measured: row counts 1–3, 5–7 and
9–11 take other kernels than 4, 8 and ≥ 12), so packed rows are padded to a multiple of
`ROW_MULTIPLE`, and attention runs in float64 (its rounding back to float32 no longer depends on
how a prompt was split). A request's tokens therefore never depend on its batch companions.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, replace

import torch
from torch import nn

from executors.families.lm.decoding import Generation, next_tokens
from executors.families.lm.model import DecoderLM, apply_rotary, decoder_of, rotary
from executors.families.stream.requests import Request, RequestState, StreamResult

ROW_MULTIPLE = 4


@dataclass(frozen=True)
class EngineOptions:
    continuous: bool = False
    prefix_caching: bool = False
    chunk_size: int = 0  # token budget per iteration; 0 = whole prefills
    block_size: int = 16
    cache_blocks: int = 256  # extra blocks that keep released prefixes for reuse (LRU)


class BlockPool:
    """Paged KV storage per layer with optional hash-chained prefix reuse and LRU eviction."""

    def __init__(self, lm: DecoderLM, num_blocks: int, block_size: int, prefix_caching: bool):
        c = lm.config
        weight = lm.tok_embeddings.weight
        shape = (num_blocks, c.n_kv_heads, block_size, c.head_dim)
        self.keys = [torch.zeros(shape, dtype=weight.dtype, device=weight.device) for _ in range(c.n_layers)]
        self.values = [torch.zeros(shape, dtype=weight.dtype, device=weight.device) for _ in range(c.n_layers)]
        self.block_size, self.prefix_caching = block_size, prefix_caching
        self.free = deque(range(num_blocks))
        self.refs = [0] * num_blocks
        self.by_hash: dict[int, int] = {}
        self.hash_of: dict[int, int] = {}
        self.evictable: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced, oldest first
        self.peak_used = 0

    def block_bytes(self) -> int:
        return 2 * len(self.keys) * self.keys[0][0].numel() * self.keys[0].element_size()

    def allocate(self) -> int:
        if self.free:
            block = self.free.popleft()
        elif self.evictable:
            block, _ = self.evictable.popitem(last=False)
            del self.by_hash[self.hash_of.pop(block)]
        else:
            raise RuntimeError("KV block pool exhausted")
        self.refs[block] = 1
        self.peak_used = max(self.peak_used, len(self.refs) - len(self.free))
        return block

    def extend_hashes(self, state: RequestState, full_blocks: int) -> None:
        """Key of block i = hash(key of block i-1, its tokens): equal keys mean equal prefixes."""
        while len(state.block_hashes) < full_blocks:
            tokens, i = state.tokens, len(state.block_hashes)
            parent = state.block_hashes[-1] if state.block_hashes else 0
            state.block_hashes.append(hash((parent, tuple(tokens[i * self.block_size : (i + 1) * self.block_size]))))

    def match_prefix(self, state: RequestState) -> None:
        """Takes the longest cached run of full prompt blocks, keeping ≥ 1 prompt token to compute."""
        self.extend_hashes(state, (len(state.request.prompt) - 1) // self.block_size)
        for key in state.block_hashes:
            block = self.by_hash.get(key)
            if block is None:
                break
            self.evictable.pop(block, None)
            self.refs[block] += 1
            state.blocks.append(block)
        state.kv_len = state.cached_tokens = len(state.blocks) * self.block_size

    def register_full_blocks(self, state: RequestState) -> None:
        """Offers every block whose keys/values are all computed to later requests."""
        full = state.kv_len // self.block_size
        self.extend_hashes(state, full)
        for position in range(state.registered, full):
            block, key = state.blocks[position], state.block_hashes[position]
            if block not in self.hash_of and key not in self.by_hash:
                self.by_hash[key], self.hash_of[block] = block, key
        state.registered = max(state.registered, full)

    def release(self, state: RequestState) -> None:
        for block in state.blocks:
            self.refs[block] -= 1
            if self.refs[block] == 0:
                if block in self.hash_of:
                    self.evictable[block] = None
                else:
                    self.free.append(block)
        state.blocks = []


def _padded(x: torch.Tensor) -> torch.Tensor:
    extra = -x.shape[0] % ROW_MULTIPLE
    return torch.cat((x, x.new_zeros(extra, *x.shape[1:]))) if extra else x


def _attend(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Causal attention in float64 for a batch of requests over their gathered blocks.

    q [n, Hkv, G, t, D] (G query heads share a KV head), keys/values [n, Hkv, L, D], positions
    [n, t] of the queries, lengths [n] of valid keys. A query sees keys up to its own position.
    """
    scores = q.double() @ keys.double()[:, :, None].transpose(-1, -2) / math.sqrt(q.shape[-1])
    slots = torch.arange(keys.shape[2], device=q.device)
    allowed = (slots <= positions[..., None]) & (slots < lengths[:, None, None])  # [n, t, L]
    scores = scores.masked_fill(~allowed[:, None, None], float("-inf"))
    return (torch.softmax(scores, dim=-1) @ values.double()[:, :, None]).to(q.dtype)


def _gather(cache: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Blocks [n, blocks] of a layer's pool → [n, Hkv, blocks * block_size, D]."""
    n, blocks = tables.shape
    gathered = cache[tables]  # [n, blocks, Hkv, block_size, D]
    return gathered.transpose(1, 2).reshape(n, cache.shape[1], blocks * cache.shape[2], cache.shape[3])


@torch.inference_mode()
def packed_forward(lm: DecoderLM, pool: BlockPool, items: list[tuple[RequestState, list[int]]]) -> torch.Tensor:
    """One forward over every item's new tokens; returns the logits of each item's last token.

    Decode items (one token each) attend together over their blocks padded to the longest;
    each prefill piece attends on its own.
    """
    c = lm.config
    device = lm.tok_embeddings.weight.device
    lengths = [len(tokens) for _, tokens in items]
    starts = [state.kv_len for state, _ in items]
    tokens = torch.tensor([t for _, new in items for t in new], device=device)
    positions = torch.tensor([s + i for s, n in zip(starts, lengths, strict=False) for i in range(n)], device=device)
    rows, size, group = len(tokens), pool.block_size, c.n_heads // c.n_kv_heads
    block_ids = torch.tensor(
        [
            state.blocks[p // size]
            for (state, _), s, n in zip(items, starts, lengths, strict=False)
            for p in range(s, s + n)
        ],
        device=device,
    )
    offsets = positions % size
    row_of = list(itertools.accumulate(lengths, initial=0))
    decodes = [i for i, n in enumerate(lengths) if n == 1]
    prefills = [i for i, n in enumerate(lengths) if n > 1]

    def tables(indices: list[int]) -> torch.Tensor:
        needed = [(starts[i] + lengths[i] - 1) // size + 1 for i in indices]
        padded = [items[i][0].blocks[:k] + [0] * (max(needed) - k) for i, k in zip(indices, needed, strict=False)]
        return torch.tensor(padded, device=device)

    pieces = []  # (item indices, query rows, block tables)
    if decodes:
        pieces.append((decodes, torch.tensor([row_of[i] for i in decodes], device=device), tables(decodes)))
    pieces += [([i], torch.arange(row_of[i], row_of[i + 1], device=device), tables([i])) for i in prefills]
    groups = [  # each piece with its query positions and key counts
        (
            idx,
            query_rows,
            table,
            positions[query_rows].view(len(idx), -1),
            torch.tensor([starts[i] + lengths[i] for i in idx], device=device),
        )
        for idx, query_rows, table in pieces
    ]
    cos, sin = rotary(positions, c.head_dim, c.rope_theta)
    x = _padded(lm.tok_embeddings(tokens))
    for index, layer in enumerate(lm.layers):
        attn = layer.attention
        h = layer.attention_norm(x)
        q = apply_rotary(attn.wq(h)[:rows].view(rows, c.n_heads, c.head_dim).transpose(0, 1), cos, sin)
        k = apply_rotary(attn.wk(h)[:rows].view(rows, c.n_kv_heads, c.head_dim).transpose(0, 1), cos, sin)
        v = attn.wv(h)[:rows].view(rows, c.n_kv_heads, c.head_dim)
        pool.keys[index][block_ids, :, offsets] = k.transpose(0, 1)
        pool.values[index][block_ids, :, offsets] = v
        attended = torch.empty(rows, c.n_heads, c.head_dim, dtype=q.dtype, device=device)
        for idx, query_rows, table, query_positions, key_counts in groups:
            n = len(idx)
            grouped = q[:, query_rows].view(c.n_kv_heads, group, n, -1, c.head_dim).permute(2, 0, 1, 3, 4)
            out = _attend(
                grouped,
                _gather(pool.keys[index], table),
                _gather(pool.values[index], table),
                query_positions,
                key_counts,
            )  # [n, Hkv, G, t, D]
            attended[query_rows] = out.permute(0, 3, 1, 2, 4).reshape(-1, c.n_heads, c.head_dim)
        x = x + attn.wo(_padded(attended.view(rows, -1)))
        x = x + layer.feed_forward(layer.ffn_norm(x))
    last_rows = torch.tensor(row_of[1:], device=device) - 1
    return lm.output(_padded(lm.norm(x)[last_rows]))[: len(items)].float()


def _schedule(running: list[RequestState], options: EngineOptions) -> list[tuple[RequestState, list[int]]]:
    """Decodes first (one token each), then prefills in admission order within the token budget."""
    items = [(state, [state.output[-1]]) for state in running if not state.in_prefill]
    budget = max(1, options.chunk_size - len(items)) if options.chunk_size else math.inf
    for state in running:
        if state.in_prefill and budget > 0:
            take = int(min(len(state.request.prompt) - state.kv_len, budget))
            items.append((state, list(state.request.prompt[state.kv_len : state.kv_len + take])))
            budget -= take
    return items


def serve(
    lm: DecoderLM,
    options: EngineOptions,
    requests: list[Request],
    max_batch: int,
    *,
    sampling: str = "greedy",
    temperature: float = 1.0,
    seed: int = 0,
) -> StreamResult:
    """Serves the requests in real time: each is admitted no earlier than its arrival_s."""
    device = lm.tok_embeddings.weight.device
    size = options.block_size
    per_request = max(math.ceil((len(r.prompt) + r.max_new_tokens) / size) for r in requests)
    spare = options.cache_blocks if options.prefix_caching else 0
    pool = BlockPool(lm, min(max_batch, len(requests)) * per_request + spare, size, options.prefix_caching)
    states = [RequestState(i, r) for i, r in enumerate(requests)]
    generators = [
        torch.Generator(device=device).manual_seed(seed + i) if sampling != "greedy" else None
        for i in range(len(states))
    ]
    pending = deque(sorted(states, key=lambda s: (s.request.arrival_s, s.index)))
    waiting: deque[RequestState] = deque()
    running: list[RequestState] = []
    schedule, computed, finished = [], 0, 0

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    started = time.perf_counter()
    while finished < len(states):
        now = clock()
        while pending and pending[0].request.arrival_s <= now:
            waiting.append(pending.popleft())
        if not running and not waiting:
            time.sleep(max(0.0, pending[0].request.arrival_s - now))
            continue
        if options.continuous or not running:
            busy = bool(running)
            while waiting and len(running) < max_batch:
                state = waiting.popleft()
                state.admitted_while_running = busy
                if options.prefix_caching:
                    pool.match_prefix(state)
                running.append(state)
        items = _schedule(running, options)
        prefilling = [state.in_prefill for state, _ in items]
        for (state, new), prefill in zip(items, prefilling, strict=False):
            while len(state.blocks) * size < state.kv_len + len(new):
                state.blocks.append(pool.allocate())
            state.chunks += prefill
            computed += len(new) if prefill else 0
        logits = packed_forward(lm, pool, items)
        now = clock()
        schedule.append(
            {
                "t": now,
                "decode": [s.index for (s, _), p in zip(items, prefilling, strict=False) if not p],
                "prefill": [(s.index, len(new)) for (s, new), p in zip(items, prefilling, strict=False) if p],
            }
        )
        for row, (state, new) in enumerate(items):
            state.kv_len += len(new)
            if options.prefix_caching:
                pool.register_full_blocks(state)
            if state.in_prefill:
                continue
            state.output.append(int(next_tokens(logits[row : row + 1], sampling, temperature, generators[state.index])))
            state.token_times.append(now)
            if len(state.output) == state.request.max_new_tokens:
                pool.release(state)
                running.remove(state)
                finished += 1
    return StreamResult(states, schedule, computed, pool.peak_used, pool.block_bytes(), clock())


class ServedLM(nn.Module):
    """The decoder plus the serving options the methods of a composite switched on."""

    def __init__(self, lm: DecoderLM, options: EngineOptions):
        super().__init__()
        self.lm, self.options = lm, options

    def forward(self, *args, **kwargs):
        return self.lm(*args, **kwargs)


def with_options(model: nn.Module, **changes) -> ServedLM:
    """Adds serving options to a model, keeping those an earlier method of the composite set."""
    if isinstance(model, ServedLM):
        return ServedLM(model.lm, replace(model.options, **changes))
    return ServedLM(decoder_of(model), replace(EngineOptions(), **changes))


@dataclass
class ServingRunner:
    model: ServedLM

    def serve(self, requests: list[Request], max_batch: int, **sampling) -> StreamResult:
        return serve(self.model.lm, self.model.options, requests, max_batch, **sampling)

    def generate(
        self,
        prompts: torch.Tensor,
        max_new_tokens: int,
        *,
        sampling: str = "greedy",
        temperature: float = 1.0,
        seed: int = 0,
    ) -> Generation:
        """The offline case: every prompt arrives at once and may run in one batch."""
        requests = [Request(tuple(row.tolist()), max_new_tokens) for row in prompts]
        result = self.serve(requests, len(requests), sampling=sampling, temperature=temperature, seed=seed)
        tokens = torch.tensor([state.output for state in result.requests], dtype=torch.long, device=prompts.device)
        return Generation(
            tokens=tokens,
            forward_passes=len(result.schedule),
            stats={
                "prefill_tokens_computed": result.prefill_tokens_computed,
                "prefix_hit_tokens": sum(s.cached_tokens for s in result.requests),
            },
        )
