"""Tokenizers: bytes for the zoo LMs, a local `tokenizer.json` for Hugging Face checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

BYTE_VOCAB = 256
BOS_ID = 256
EOS_ID = 257
BYTE_TOKENIZER_VOCAB = 259  # 256 bytes + BOS + EOS + PAD


class ByteTokenizer:
    """UTF-8 bytes as tokens: nothing to train, nothing to download, every text encodes."""

    eos_id = EOS_ID
    bos_id = BOS_ID
    vocab_size = BYTE_TOKENIZER_VOCAB

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, tokens: list[int]) -> str:
        return bytes(t for t in tokens if t < BYTE_VOCAB).decode("utf-8", errors="replace")


class LocalHFTokenizer:
    """A fast tokenizer read from a local folder's tokenizer.json (no hub, no remote code)."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self.eos_id = self._special_id(folder, "eos_token")
        self.vocab_size = self._tok.get_vocab_size()

    def _special_id(self, folder: Path, key: str) -> int | None:
        config_path = Path(folder) / "tokenizer_config.json"
        if not config_path.exists():
            return None
        token = json.loads(config_path.read_text()).get(key)
        if isinstance(token, dict):
            token = token.get("content")
        return self._tok.token_to_id(token) if isinstance(token, str) else None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        return self._tok.decode(list(tokens), skip_special_tokens=False)
