"""Tokenizers by kind: `bytes` (lossless, 257 ids), `bpe` (byte-level BPE via `tokenizers`),
`unigram` (SentencePiece)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tinylm.errors import TinyLMError
from tinylm.tokenizers.base import FORMAT, Tokenizer
from tinylm.tokenizers.bpe import BPETokenizer
from tinylm.tokenizers.bytes import ByteTokenizer
from tinylm.tokenizers.unigram import UnigramTokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {
    "bytes": ByteTokenizer,
    "bpe": BPETokenizer,
    "unigram": UnigramTokenizer,
}


def get_kind(kind: str) -> type[Tokenizer]:
    if kind not in TOKENIZERS:
        raise TinyLMError(f"unknown tokenizer kind {kind!r}; choose one of: "
                          f"{', '.join(TOKENIZERS)}")
    return TOKENIZERS[kind]


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int | None = None) -> Tokenizer:
    cls = get_kind(kind)
    if cls is ByteTokenizer:
        return ByteTokenizer()
    if not vocab_size:
        raise TinyLMError(f"a {kind} tokenizer needs a vocab size (--vocab)")
    return cls.train(texts, int(vocab_size))


def tokenizer_from_dict(data: dict, where: str = "tokenizer") -> Tokenizer:
    if data.get("format") != FORMAT:
        raise TinyLMError(f"{where}: not a tinylm tokenizer (missing format {FORMAT!r})")
    try:
        return get_kind(data.get("kind", "?")).from_dict(data)
    except TinyLMError:
        raise
    except Exception as err:  # a damaged embedded model: say so, do not crash
        raise TinyLMError(f"{where}: cannot rebuild the tokenizer: {err}") from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise TinyLMError(f"tokenizer file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise TinyLMError(f"{path}: not a tokenizer file ({err})") from None
    return tokenizer_from_dict(data, where=str(path))


__all__ = ["Tokenizer", "TOKENIZERS", "train_tokenizer", "load_tokenizer", "tokenizer_from_dict",
           "ByteTokenizer", "BPETokenizer", "UnigramTokenizer"]
