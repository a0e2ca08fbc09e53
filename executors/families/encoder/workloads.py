"""The encoder's workload (batch × sequence length) and its local retrieval set.

Quality of a transformed encoder is measured on a title → passage retrieval set built here,
deterministically, from the English help topics that ship with Python (`pydoc_data.topics`:
the language reference's sections). Each section heading is a query; the section's opening
prose is its one relevant document; near-duplicate headings ("Assignment statements",
"Augmented assignment statements") make it a real ranking task. Topics are split by
position: every fourth goes to calibration text, the rest to the retrieval set, so
calibration never sees what quality is measured on.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

import torch

from executors.families.lm.workloads import MAX_BATCH, OBJECTIVES
from executors.registry import ModelBundle, bounded, context_length
from profiles.models import workload_id_for

EMBED_KIND = "encoder-embed"
CALIBRATION_EVERY = 4
PASSAGE_CHARS = 400  # two or three sentences: about 60–100 word pieces
RECALL_AT = (1, 5)
_UNDERLINE = re.compile(r"([*=\-~^])\1{2,}")


@dataclass(frozen=True)
class EmbedWorkload:
    """Embed `batch_size` inputs of exactly `seq_len` tokens ([CLS] and [SEP] included) per call."""

    batch_size: int = bounded(1, 1, MAX_BATCH)
    seq_len: int = bounded(128, 3, 8192)
    objective: str = "latency"

    kind = EMBED_KIND

    def __post_init__(self):
        if self.batch_size < 1 or self.seq_len < 3:
            raise ValueError("an embed workload needs batch_size ≥ 1 and seq_len ≥ 3 ([CLS] x [SEP])")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {self.objective!r}")

    def shape(self) -> dict:
        return {"kind": EMBED_KIND, "batch_size": self.batch_size, "seq_len": self.seq_len, "objective": self.objective}

    @property
    def id(self) -> str:
        return workload_id_for(self.shape())

    @property
    def prompt_len(self) -> int:
        """Tokens per input, under the LM workloads' name (progress lines, size features)."""
        return self.seq_len

    @property
    def gen_len(self) -> int:
        return 0  # an encoder generates nothing

    def row(self) -> dict:
        # prompt_len carries the sequence length so size features line up with the LM workloads.
        return {
            "id": self.id,
            "kind": EMBED_KIND,
            "batch_size": self.batch_size,
            "prompt_len": self.seq_len,
            "gen_len": None,
            "sampling": "greedy",
            "objective": self.objective,
            "params": {"seq_len": self.seq_len},
        }

    def fits(self, bundle: ModelBundle) -> str | None:
        positions = context_length(bundle.model)
        if self.seq_len > positions:
            return f"seq_len {self.seq_len} exceeds the encoder's {positions} positions"
        return None


def embed_grid(batch_sizes, seq_lens) -> list[EmbedWorkload]:
    return [EmbedWorkload(b, s) for b in batch_sizes for s in seq_lens]


def parse_grid(text: str) -> list[EmbedWorkload]:
    """`batch=1,8 seq=32,128`: one workload per combination."""
    axes = {"batch": [1], "seq": [128]}
    for part in text.split():
        key, _, values = part.partition("=")
        if key not in axes:
            raise ValueError(f"unknown embed axis {key!r}; use batch=, seq=")
        axes[key] = [int(v) for v in values.split(",")]
    return embed_grid(axes["batch"], axes["seq"])


def describe(workload: EmbedWorkload) -> str:
    return f"embed b{workload.batch_size} seq{workload.seq_len}"


def call_seconds(params: int, workload: EmbedWorkload, gflops: float = 30.0) -> float:
    """One compute-bound forward."""
    return 2 * params * workload.batch_size * workload.seq_len / (gflops * 1e9)


@dataclass(frozen=True)
class RetrievalSet:
    queries: tuple[str, ...]
    documents: tuple[str, ...]  # documents[i] is the one relevant document of queries[i]
    sha256: str  # another Python version ships other help topics: the figure says which set


def _sections(text: str, chars: int | None = PASSAGE_CHARS) -> list[tuple[str, str]]:
    """(heading, opening prose) of each underlined section; grammar and code blocks are skipped."""
    lines = text.split("\n")
    heads = [
        i
        for i in range(len(lines) - 1)
        if lines[i].strip()
        and _UNDERLINE.fullmatch(lines[i + 1].strip())
        and len(lines[i + 1].strip()) == len(lines[i].strip())
    ]
    sections = []
    for start, end in zip(heads, heads[1:] + [len(lines)], strict=False):
        body = "\n".join(lines[start + 2 : end])
        prose = [" ".join(p.split()) for p in body.split("\n\n") if p.strip() and not p.startswith(" ")]
        passage = " ".join(p for p in prose if "::=" not in p)[:chars]
        if len(passage) >= 80:
            sections.append((lines[start].strip().replace('"', ""), passage))
    return sections


def _topics() -> list[tuple[int, str]]:
    from pydoc_data.topics import topics

    return list(enumerate(topics[key] for key in sorted(topics)))


@lru_cache(maxsize=1)
def retrieval_set() -> RetrievalSet:
    # A section may appear in several topics: one that calibration also sees is left out.
    seen = {
        heading.lower() for index, text in _topics() if index % CALIBRATION_EVERY == 0 for heading, _ in _sections(text)
    }
    queries, documents = [], []
    for index, text in _topics():
        if index % CALIBRATION_EVERY == 0:
            continue
        for heading, passage in _sections(text):
            if heading.lower() not in seen and passage not in documents:
                seen.add(heading.lower())
                queries.append(heading)
                documents.append(passage)
    digest = hashlib.sha256("\0".join(queries + documents).encode()).hexdigest()[:16]
    return RetrievalSet(tuple(queries), tuple(documents), digest)


@lru_cache(maxsize=1)
def calibration_texts() -> tuple[str, ...]:
    """The prose of each topic held out of the retrieval set, whole (long enough for 128-token windows)."""
    return tuple(
        " ".join(prose for _, prose in _sections(text, chars=None))
        for index, text in _topics()
        if index % CALIBRATION_EVERY == 0
    )


def embed_inputs(bundle: ModelBundle, workload: EmbedWorkload) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` rows of exactly `seq_len` tokens cut from the held-out text stream (no padding)."""
    tokenizer = bundle.tokenizer
    stream = [t for text in bundle.heldout_texts for t in tokenizer.encode_plain(text)]
    body = workload.seq_len - 2
    if len(stream) < body:
        raise ValueError(f"the held-out text has only {len(stream)} tokens")
    windows = len(stream) // body
    rows = [
        [tokenizer.cls_id, *stream[(i % windows) * body : (i % windows + 1) * body], tokenizer.sep_id]
        for i in range(workload.batch_size)
    ]
    ids = torch.tensor(rows, dtype=torch.long)
    return ids, torch.ones_like(ids)


@torch.inference_mode()
def embed_texts(model: torch.nn.Module, tokenizer, texts: tuple[str, ...], batch: int = 32) -> torch.Tensor:
    """Unit-length embeddings of `texts` in their order, in batches of similar length (as sentence-transformers)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding per batch
    out: torch.Tensor | None = None
    for start in range(0, len(texts), batch):
        chosen = order[start : start + batch]
        ids, mask = tokenizer.batch([texts[i] for i in chosen])
        embedded = model(ids, mask).float()
        if out is None:  # the width from the output: an exported graph has no encoder config to read
            out = torch.empty(len(texts), embedded.shape[-1])
        out[chosen] = embedded
    assert out is not None, "no texts to embed"
    return out


def recall_at(queries: torch.Tensor, documents: torch.Tensor, ks=RECALL_AT) -> dict[str, float]:
    """Share of queries whose own document (same index) ranks within the top k by cosine."""
    scores = queries @ documents.T
    own = scores.diagonal()[:, None]
    rank = (scores > own).sum(dim=1)  # documents scoring strictly above the relevant one
    return {f"recall_at_{k}": (rank < k).float().mean().item() for k in ks}


@dataclass(frozen=True)
class RetrievalEmbeddings:
    queries: torch.Tensor
    documents: torch.Tensor


def retrieval_embeddings(
    model: torch.nn.Module, bundle: ModelBundle, retrieval: RetrievalSet | None = None
) -> RetrievalEmbeddings:
    retrieval = retrieval or retrieval_set()
    return RetrievalEmbeddings(
        embed_texts(model, bundle.tokenizer, retrieval.queries),
        embed_texts(model, bundle.tokenizer, retrieval.documents),
    )


def embedding_quality(mine: RetrievalEmbeddings, reference: RetrievalEmbeddings) -> dict[str, float]:
    """Cosine of each embedding to the unmodified encoder's (same texts) and retrieval recall."""
    cosines = torch.cat([(mine.queries * reference.queries).sum(-1), (mine.documents * reference.documents).sum(-1)])
    quality = {"embedding_cosine": cosines.mean().item(), "embedding_cosine_min": cosines.min().item()}
    quality.update(recall_at(mine.queries, mine.documents))
    return quality
