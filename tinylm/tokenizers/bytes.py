"""The byte tokenizer: ids 0..255 are the bytes themselves, 256 is EOS (vocab 257).

Lossless for any byte string, invalid UTF-8 included. This is the tokenizer of Blink-1 and the
other byte models ("there is no tokenizer to download").
"""

from __future__ import annotations

from tinylm.tokenizers.base import Tokenizer, as_bytes


class ByteTokenizer(Tokenizer):
    kind = "bytes"

    @property
    def vocab_size(self) -> int:
        return 257

    @property
    def eos_id(self) -> int:
        return 256

    def encode(self, text: str | bytes) -> list[int]:
        return list(as_bytes(text))

    def decode_bytes(self, ids) -> bytes:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256)

    def to_dict(self) -> dict:
        return {"vocab_size": 257}

    @classmethod
    def from_dict(cls, data: dict) -> "ByteTokenizer":
        return cls()
