"""SentencePiece unigram tokenizer (Kudo 2018), trained with `sentencepiece` (e.g. 192 pieces,
as the tiny-tiny-stories BitNet model uses).

Settings chosen so that encode/decode round-trips exactly for every character seen in training:
identity normalisation (no NFKC), no dummy prefix, whitespace kept as is, "\n" a piece of its own.
A vocab this small cannot hold SentencePiece's 256 byte-fallback pieces, so characters never
seen in training encode to <unk> and decode to U+FFFD: unigram is lossless only over its
character coverage. Use `bytes` or `bpe` where every byte must survive.
"""

from __future__ import annotations

import base64
import io
from typing import Iterable

from tinylm.errors import TinyLMError
from tinylm.tokenizers.base import Tokenizer
from tinylm.tokenizers.specials import SpecialTokens

UNK_ID, EOS_ID = 0, 1
REPLACEMENT = "\ufffd".encode("utf-8")


class UnigramTokenizer(Tokenizer):
    kind = "unigram"

    def __init__(self, model_proto: bytes, specials=()):
        import sentencepiece as spm

        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self._piece_bytes = []
        for i in range(self._sp.get_piece_size()):
            if i == EOS_ID:
                self._piece_bytes.append(b"")
            elif i == UNK_ID:
                self._piece_bytes.append(REPLACEMENT)
            else:
                self._piece_bytes.append(self._sp.id_to_piece(i).replace("\u2581", " ")
                                         .encode("utf-8"))
        # appended specials (the ChatML markers): one id each, after the trained pieces
        self._specials = SpecialTokens(specials, len(self._piece_bytes))
        self._piece_bytes += self._specials.byte_table()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "UnigramTokenizer":
        import sentencepiece as spm

        if vocab_size < 8:
            raise TinyLMError(f"unigram vocab_size must be >= 8, got {vocab_size}")

        def lines():  # SentencePiece trains on "sentences"; a line is ours, newline kept apart
            for text in texts:
                for line in text.split("\n"):
                    if line:
                        yield line[:4000]

        out = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=lines(), model_writer=out, model_type="unigram",
                vocab_size=vocab_size, character_coverage=1.0,
                normalization_rule_name="identity", add_dummy_prefix=False,
                remove_extra_whitespaces=False, split_digits=False, byte_fallback=False,
                user_defined_symbols=["\n"], unk_id=UNK_ID, eos_id=EOS_ID, bos_id=-1,
                pad_id=-1, hard_vocab_limit=True, minloglevel=2, num_threads=2)
        except RuntimeError as err:
            raise TinyLMError(f"sentencepiece could not train a {vocab_size}-piece unigram "
                              f"model: {err}") from None
        return cls(out.getvalue())

    @property
    def vocab_size(self) -> int:
        return len(self._piece_bytes)

    @property
    def specials(self) -> tuple[str, ...]:
        return self._specials.tokens

    def with_specials(self, tokens) -> "UnigramTokenizer":
        """This tokenizer with `tokens` appended as special tokens (new ids at the end)."""
        return UnigramTokenizer(self._proto, (*self.specials, *(t for t in tokens
                                                                if t not in self.specials)))

    @property
    def eos_id(self) -> int:
        return EOS_ID

    def encode(self, text: str | bytes) -> list[int]:
        return self._specials.encode(self._text(text), self._sp.encode)

    @staticmethod
    def _text(text: str | bytes) -> str:
        if not isinstance(text, str):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as err:
                raise TinyLMError(f"unigram tokenizer needs valid UTF-8 text: {err}") from None
        return text

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if any(self._specials.occur_in(t) for t in texts):
            return [self.encode(t) for t in texts]
        return self._sp.encode(texts, num_threads=2)

    def decode_bytes(self, ids) -> bytes:
        table = self._piece_bytes
        try:
            return b"".join(table[int(i)] for i in ids)
        except IndexError:
            raise TinyLMError(f"token id out of range for a {len(table)}-piece vocab") from None

    def to_dict(self) -> dict:
        data = {"vocab_size": self.vocab_size,
                "sentencepiece_model": base64.b64encode(self._proto).decode("ascii")}
        if self.specials:  # only then: older files keep their content hash
            data["specials"] = list(self.specials)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "UnigramTokenizer":
        return cls(base64.b64decode(data["sentencepiece_model"]), data.get("specials", ()))
