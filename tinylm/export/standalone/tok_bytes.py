"""Exported part: the byte tokenizer (ids 0..255 are the bytes, 256 is EOS)."""

from __future__ import annotations

# %% export


class Tokenizer:
    """Bytes in, bytes out: no vocabulary to ship."""

    def __init__(self, data: dict):
        self.eos_id, self.vocab_size = 256, 257

    def encode(self, text) -> list[int]:
        if isinstance(text, str):
            text = text.encode("utf-8", errors="surrogatepass")
        return list(bytes(text))

    def decode_bytes(self, ids) -> bytes:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256)
