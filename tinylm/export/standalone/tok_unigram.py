"""Exported part: SentencePiece unigram encoding without the `sentencepiece` library.

tinylm trains its unigram tokenizers with identity normalisation, no dummy prefix, white space
kept, and "\\n" as a user-defined piece (see `tinylm.tokenizers.unigram`). Encoding such a
model is: spaces become U+2581, then the Viterbi best segmentation over the pieces, scored as
SentencePiece scores it (its unigram model's optimized encoder, 0.2):

- a piece scores its log-probability; a user-defined piece scores len * max_score - 0.1, so it
  always wins; max_score and min_score are over the normal pieces;
- a character that starts no one-character piece is unknown and scores min_score - 10;
- path scores are float32 sums (C++ `float`), so they are rounded to float32 here after every
  addition (`f32`), except that the user-defined score is a double, as in C++;
- ties keep the first path found (a candidate replaces the best only when strictly greater),
  and a run of unknown characters comes out as one unknown id.

The data (`TOKENIZER`) is each piece's text, score and type (1 normal, 2 unknown, 3 control,
4 user-defined, 5 unused), and the EOS id.
"""

from __future__ import annotations

import struct

# %% export

NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4


def f32(x: float) -> float:
    """x rounded to float32, as a C++ `float` holds it."""
    return struct.unpack("f", struct.pack("f", x))[0]


class Tokenizer:
    def __init__(self, data: dict):
        pieces, self.scores, self.types = data["pieces"], data["scores"], data["types"]
        self.eos_id, self.vocab_size = data["eos_id"], len(pieces)
        self.unk_id = self.types.index(UNKNOWN)
        self.ids = {p: i for i, p in enumerate(pieces) if self.types[i] in (NORMAL, USER_DEFINED)}
        normal = [s for s, t in zip(self.scores, self.types) if t == NORMAL]
        self.min_score, self.max_score = min(normal), max(normal)
        self.longest = max(len(p) for p in self.ids)
        self.id_bytes = [b"" if t == CONTROL else "\ufffd".encode("utf-8") if t == UNKNOWN else
                         p.replace("\u2581", " ").encode("utf-8")
                         for p, t in zip(pieces, self.types)]

    def encode(self, text) -> list[int]:
        if not isinstance(text, str):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"unigram tokenizer needs valid UTF-8 text: {err}") from None
        text = text.replace(" ", "\u2581")
        n = len(text)
        # best path ending at each position: its score, where its last piece starts, that id
        score, start, ids = [0.0] * (n + 1), [-1] * (n + 1), [-1] * (n + 1)
        unk_score = f32(self.min_score - 10.0)
        for i in range(n):
            single = False
            for j in range(i + 1, min(n, i + self.longest) + 1):
                piece = self.ids.get(text[i:j])
                if piece is None:
                    continue
                if self.types[piece] == USER_DEFINED:
                    candidate = (j - i) * self.max_score - 0.1 + score[i]
                else:
                    candidate = f32(self.scores[piece] + score[i])
                if start[j] == -1 or candidate > score[j]:
                    score[j], start[j], ids[j] = f32(candidate), i, piece
                single = single or j == i + 1
            if not single:
                candidate = f32(unk_score + score[i])
                if start[i + 1] == -1 or candidate > score[i + 1]:
                    score[i + 1], start[i + 1], ids[i + 1] = candidate, i, self.unk_id
        path, end = [], n
        while end > 0:
            path.append(ids[end])
            end = start[end]
        out = []
        for piece in reversed(path):  # a run of unknowns is one unknown
            if not (piece == self.unk_id and out and out[-1] == self.unk_id):
                out.append(piece)
        return out

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self.id_bytes[int(i)] for i in ids)
