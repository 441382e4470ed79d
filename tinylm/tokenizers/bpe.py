"""Byte-level BPE, trained with Hugging Face `tokenizers` (the Glint-1.3 tokenizer: vocab 500).

Byte-level means the base alphabet is the 256 byte values, so every byte string has an encoding.
`tokenizers` works on `str`, though, so bytes that are not valid UTF-8 are handled here: the
input is split into valid UTF-8 runs (encoded normally) and stray bytes (each mapped to its
single-byte token). Decoding goes through a per-id byte table, so ids -> bytes is exact.
"""

from __future__ import annotations

from typing import Iterable

from tinylm.errors import TinyLMError
from tinylm.tokenizers.base import Tokenizer
from tinylm.tokenizers.specials import SpecialTokens

EOS_TOKEN = "<|endoftext|>"


def byte_to_char_table() -> list[str]:
    """The byte-level alphabet (as GPT-2 defined it and `tokenizers.ByteLevel` uses): printable
    Latin-1 bytes stand for themselves, the other 68 bytes map to code points 256, 257, ...
    in byte order, so every token is a printable string."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    table, extra = [], 0
    for byte in range(256):
        if byte in printable:
            table.append(chr(byte))
        else:
            table.append(chr(256 + extra))
            extra += 1
    return table


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, hf_tokenizer, specials=()):
        self._tok = hf_tokenizer
        self._tok.encode_special_tokens = True  # a literal "<|endoftext|>" in text is text
        eos = self._tok.token_to_id(EOS_TOKEN)
        if eos is None:
            raise TinyLMError("BPE tokenizer file has no <|endoftext|> token")
        self._eos = eos
        char_to_byte = {c: b for b, c in enumerate(byte_to_char_table())}
        self._byte_id = [self._tok.token_to_id(c) for c in byte_to_char_table()]
        if any(i is None for i in self._byte_id):
            raise TinyLMError("BPE tokenizer lacks some single-byte tokens; not byte-level")
        self._id_bytes = []
        for i in range(self._tok.get_vocab_size()):
            token = self._tok.id_to_token(i)
            self._id_bytes.append(b"" if i == eos or token is None else
                                  bytes(char_to_byte[c] for c in token))
        # appended specials (the ChatML markers): one id each, after the trained vocabulary
        self._specials = SpecialTokens(specials, len(self._id_bytes))
        self._id_bytes += self._specials.byte_table()

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257 + 1:
            raise TinyLMError(f"byte-level BPE needs vocab_size >= 258 (256 bytes + EOS + merges), "
                              f"got {vocab_size}")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    # ------------------------------------------------------------------ interface

    @property
    def vocab_size(self) -> int:
        return len(self._id_bytes)

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def specials(self) -> tuple[str, ...]:
        return self._specials.tokens

    def with_specials(self, tokens) -> "BPETokenizer":
        """This tokenizer with `tokens` appended as special tokens (new ids at the end)."""
        return BPETokenizer(self._tok, (*self.specials, *(t for t in tokens
                                                          if t not in self.specials)))

    def encode(self, text: str | bytes) -> list[int]:
        return self._specials.encode(text, self._encode_plain)

    def _encode_plain(self, text: str | bytes) -> list[int]:
        if isinstance(text, str):
            try:
                return self._tok.encode(text, add_special_tokens=False).ids
            except Exception:  # lone surrogates cannot cross into Rust: take the byte path
                text = text.encode("utf-8", errors="surrogateescape")
        return self._encode_bytes(bytes(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # `tokenizers` runs the batch on all cores in Rust: this is the fast path for packing.
        if any(self._specials.occur_in(t) for t in texts):
            return [self.encode(t) for t in texts]
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def _encode_bytes(self, data: bytes) -> list[int]:
        ids: list[int] = []
        text = data.decode("utf-8", errors="surrogateescape")
        run_start = 0
        for i, ch in enumerate(text):
            if "\udc80" <= ch <= "\udcff":  # an undecodable byte, escaped by Python
                if run_start < i:
                    ids += self._tok.encode(text[run_start:i], add_special_tokens=False).ids
                ids.append(self._byte_id[ord(ch) - 0xDC00])
                run_start = i + 1
        if run_start < len(text):
            ids += self._tok.encode(text[run_start:], add_special_tokens=False).ids
        return ids

    def decode_bytes(self, ids) -> bytes:
        table = self._id_bytes
        try:
            return b"".join(table[int(i)] for i in ids)
        except IndexError:
            raise TinyLMError(f"token id out of range for a {len(table)}-token BPE vocab") from None

    def to_dict(self) -> dict:
        data = {"vocab_size": self.vocab_size, "hf_json": self._tok.to_str()}
        if self.specials:  # only then: older files keep their content hash
            data["specials"] = list(self.specials)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_str(data["hf_json"]), data.get("specials", ()))
