"""Special tokens appended to a trained vocabulary: each one string that always encodes to one
id of its own (the ChatML markers `<|im_start|>` and `<|im_end|>` for `bpe` and `unigram`).

Neither library can grow a trained vocabulary the same way (a `tokenizers` BPE could, but
tinylm runs it with `encode_special_tokens=True` so that a literal `<|endoftext|>` in web text
stays text; a SentencePiece model proto cannot without retraining), so the split is done here,
once for both: text is cut at the markers (`re.split` with the markers as one alternation),
the pieces between them go through the trained tokenizer, and each marker becomes its id,
`base vocab + its index`. Ids therefore only ever grow at the end, which is what lets a base
checkpoint be extended (`tinylm.instruct.vocab`) rather than retrained.

A marker inside user text is therefore a marker: `tinylm.infer.chatml` refuses content that
holds one, so a user turn cannot forge another turn.

The tokenizer JSON gets a `"specials": [...]` list only when there are specials, so every older
tokenizer file loads unchanged and keeps its content hash (token caches and checkpoints name
tokenizers by that hash).
"""

from __future__ import annotations

import re

from tinylm.errors import TinyLMError


class SpecialTokens:
    """The appended tokens of one tokenizer, ids first_id, first_id + 1, ..."""

    def __init__(self, tokens, first_id: int):
        tokens = tuple(tokens)
        if len(set(tokens)) != len(tokens) or not all(isinstance(t, str) and t for t in tokens):
            raise TinyLMError(f"special tokens must be distinct non-empty strings, got {tokens}")
        self.tokens, self.first_id = tokens, int(first_id)
        self.ids = {t: self.first_id + i for i, t in enumerate(tokens)}
        # longest first, so a marker that contains another is matched whole
        ordered = sorted(tokens, key=len, reverse=True)
        self._text = re.compile("(" + "|".join(map(re.escape, ordered)) + ")") if tokens else None
        self._bytes = (re.compile(b"(" + b"|".join(re.escape(t.encode()) for t in ordered)
                                  + b")") if tokens else None)

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def occur_in(self, text) -> bool:
        if not self.tokens:
            return False
        pattern = self._text if isinstance(text, str) else self._bytes
        return pattern.search(text) is not None

    def encode(self, text, encode_plain) -> list[int]:
        """`text` (str or bytes) with every marker as its id and the rest through
        `encode_plain`."""
        if not self.tokens:
            return encode_plain(text)
        is_text = isinstance(text, str)
        pattern = self._text if is_text else self._bytes
        ids: list[int] = []
        for i, piece in enumerate(pattern.split(text if is_text else bytes(text))):
            if i % 2:  # re.split puts the captured markers at the odd places
                ids.append(self.ids[piece if is_text else piece.decode()])
            elif piece:
                ids += encode_plain(piece)
        return ids

    def byte_table(self) -> list[bytes]:
        """The bytes each appended id decodes to, in id order."""
        return [t.encode("utf-8") for t in self.tokens]
