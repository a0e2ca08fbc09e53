"""LM generation workloads and their inputs: held-out prompts cut to an exact token length."""

from __future__ import annotations

import itertools
import weakref
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from executors.registry import ModelBundle, bounded, context_length
from profiles.models import workload_id_for

SAMPLINGS = ("greedy", "sample")
OBJECTIVES = ("latency", "throughput", "memory")
MAX_BATCH, MAX_TOKENS = 512, 32768  # beyond any model the zoo or a user's CPU box serves


@dataclass(frozen=True)
class LMWorkload:
    """Generate `gen_len` tokens after held-out prompts of exactly `prompt_len` tokens (kind lm-generate)."""

    batch_size: int = bounded(1, 1, MAX_BATCH)
    prompt_len: int = bounded(32, 1, MAX_TOKENS)
    gen_len: int = bounded(32, 1, 4096)
    sampling: str = "greedy"
    temperature: float = bounded(1.0, 0.0, 10.0)
    objective: str = "latency"

    kind = "lm-generate"

    def __post_init__(self):
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, not {self.sampling!r}")
        if min(self.batch_size, self.prompt_len, self.gen_len) < 1:
            raise ValueError("batch_size, prompt_len and gen_len must be positive")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {self.objective!r}")

    def shape(self) -> dict:
        shape = {"kind": self.kind, **asdict(self)}
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
            "kind": self.kind,
            "batch_size": self.batch_size,
            "prompt_len": self.prompt_len,
            "gen_len": self.gen_len,
            "sampling": self.sampling,
            "objective": self.objective,
            "params": {"temperature": self.temperature},
        }

    def fits(self, bundle: ModelBundle) -> str | None:
        need = self.prompt_len + self.gen_len
        context = context_length(bundle.model)
        if need > context:
            return f"prompt + generation = {need} tokens exceeds the model's context of {context}"
        return None


def grid(batch_sizes, prompt_lens, gen_lens, sampling: str = "greedy") -> list[LMWorkload]:
    return [LMWorkload(b, p, g, sampling) for b, p, g in itertools.product(batch_sizes, prompt_lens, gen_lens)]


def parse_grid(text: str) -> list[LMWorkload]:
    """`batch=1,4 prompt=32,256 gen=32 sampling=greedy,sample`: one workload per combination."""
    axes: dict[str, list] = {"batch": [1], "prompt": [32], "gen": [32], "sampling": ["greedy"]}
    for part in text.split():
        key, _, values = part.partition("=")
        if key not in axes:
            raise ValueError(f"unknown axis {key!r}; use batch=, prompt=, gen=, sampling=")
        axes[key] = [v if key == "sampling" else int(v) for v in values.split(",")]
    return [w for sampling in axes["sampling"] for w in grid(axes["batch"], axes["prompt"], axes["gen"], sampling)]


def describe(workload: LMWorkload) -> str:
    return f"b{workload.batch_size} p{workload.prompt_len} g{workload.gen_len}" + (
        f" {workload.sampling}" if workload.sampling != "greedy" else ""
    )


def call_seconds(params: int, workload: LMWorkload, gflops: float = 30.0, mem_gbs: float = 8.0) -> float:
    """A rough cost of one generate call: compute-bound prefill plus memory-bound decode steps."""
    prefill = 2 * params * workload.batch_size * workload.prompt_len / (gflops * 1e9)
    step = params * 4 / (mem_gbs * 1e9) + 2 * params * workload.batch_size / (gflops * 1e9)
    return prefill + workload.gen_len * step


def calibration_windows(bundle: ModelBundle, count: int = 8, length: int = 128) -> torch.Tensor:
    """Training-split token windows (never the held-out text the quality is measured on)."""
    rows = []
    for text in bundle.calibration_texts[:: max(1, len(bundle.calibration_texts) // count)]:
        tokens = bundle.tokenizer.encode(text)
        if len(tokens) >= length:
            rows.append(tokens[:length])
        if len(rows) == count:
            break
    return torch.tensor(rows, dtype=torch.long)


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


_STREAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def calibration_stream(bundle: ModelBundle) -> torch.Tensor:
    """All calibration tokens in one stream, remembered per tokenizer object (encoding takes seconds)."""
    texts, stream = _STREAMS.get(bundle.tokenizer, (None, None))
    if texts is not bundle.calibration_texts:
        eos = [bundle.tokenizer.eos_id] if bundle.tokenizer.eos_id is not None else []
        stream = torch.tensor([t for text in bundle.calibration_texts for t in bundle.tokenizer.encode(text) + eos])
        _STREAMS[bundle.tokenizer] = (bundle.calibration_texts, stream)
    return stream


def training_windows(bundle: ModelBundle, count: int, seq_len: int, seed: int) -> torch.Tensor:
    """`count` random token windows [count, seq_len + 1] from the calibration (training) split."""
    stream = calibration_stream(bundle)
    if len(stream) <= seq_len + 1:
        raise ValueError(f"calibration text has {len(stream)} tokens, needs more than {seq_len + 1}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - seq_len - 1, (count,), generator=generator)
    return torch.stack([stream[s : s + seq_len + 1] for s in starts.tolist()])


def lm_loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
