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


MAX_VOCAB = 1 << 20  # ids are stored as uint32 at most; far beyond a tiny model's needs


def check_training_request(kind: str, vocab_size: int | None, max_chars: int | None = None):
    """Refuse a kind, vocab or text budget that cannot work, before any text is read."""
    cls = get_kind(kind)
    if vocab_size is not None and not 1 <= vocab_size <= MAX_VOCAB:
        raise TinyLMError(f"--vocab must be in [1, {MAX_VOCAB}], got {vocab_size}")
    if cls is not ByteTokenizer and not vocab_size:
        raise TinyLMError(f"a {kind} tokenizer needs a vocab size (--vocab)")
    if max_chars is not None and max_chars < 1:
        raise TinyLMError(f"--max-chars must be >= 1, got {max_chars}")


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int | None = None) -> Tokenizer:
    cls = get_kind(kind)
    if cls is ByteTokenizer:
        return ByteTokenizer()
    if not vocab_size:
        raise TinyLMError(f"a {kind} tokenizer needs a vocab size (--vocab)")
    return cls.train(texts, int(vocab_size))


def tokenizer_from_dict(data: dict, where: str = "tokenizer") -> Tokenizer:
    if not isinstance(data, dict):
        raise TinyLMError(f"{where}: not a tinylm tokenizer (a JSON {type(data).__name__}, "
                          f"not an object)")
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
