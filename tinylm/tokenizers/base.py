"""The tokenizer interface every tinylm tokenizer meets.

A tokenizer is saved as one JSON file: {"format": "tinylm-tokenizer", "kind": ..., ...}. Its
content hash (sha256 of that canonical JSON) names it in data caches and checkpoints, so a
cache built with another tokenizer is detected, not silently reused.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path

from tinylm.io import write_text_atomic

FORMAT = "tinylm-tokenizer"


class Tokenizer(ABC):
    kind: str = ""
    specials: tuple[str, ...] = ()  # appended one-id tokens (bpe, unigram: tokenizers/specials.py)

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def eos_id(self) -> int: ...

    @abstractmethod
    def encode(self, text: str | bytes) -> list[int]:
        """Text (or raw bytes) to ids. Never adds EOS: callers add it between documents."""

    @abstractmethod
    def decode_bytes(self, ids) -> bytes:
        """Ids back to the exact bytes they stand for (EOS decodes to nothing)."""

    @abstractmethod
    def to_dict(self) -> dict:
        """Everything needed to rebuild this tokenizer, JSON-serialisable."""

    def decode(self, ids) -> str:
        """Ids to text; bytes that are not valid UTF-8 become U+FFFD (use decode_bytes for exact)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def content_hash(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def save(self, path: str | Path) -> None:
        data = {"format": FORMAT, "kind": self.kind, **self.to_dict()}
        write_text_atomic(Path(path), json.dumps(data, ensure_ascii=False))

    def describe(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eos_id": self.eos_id,
                "hash": self.content_hash()}


def as_bytes(text: str | bytes) -> bytes:
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    if isinstance(text, str):
        return text.encode("utf-8", errors="surrogatepass")
    raise TypeError(f"expected str or bytes, got {type(text).__name__}")
