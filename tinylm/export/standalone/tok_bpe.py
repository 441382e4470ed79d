"""Exported part: byte-level BPE encoding without the `tokenizers` library.

tinylm's BPE tokenizer is a Hugging Face `tokenizers` model (ByteLevel pre-tokenizer, no
prefix space, BPE merges, no normaliser). This part gives the same ids with the standard
library alone:

1. pre-tokenize with GPT-2's pattern, 's|'t|'re|'ve|'m|'ll|'d| ?L+| ?N+| ?[^sLN]+|s+(?!S)|s+
   (L letters, N numbers, s white space), written out as a scanner over character classes
   because Python's `re` has no \\p{L}. The classes come from `unicodedata`, plus the letters
   and digits of Unicode 15-16 that `tokenizers` (Oniguruma) knows and Python 3.11's Unicode
   14 tables do not (`NEWER_UNICODE`, found by probing tokenizers 0.23 over every code point);
2. turn each piece into its UTF-8 bytes, one symbol per byte;
3. merge: repeatedly join the adjacent pair with the lowest merge rank, leftmost first, as
   `tokenizers`' BPE does (a heap ordered by rank, then position).

Bytes that are not valid UTF-8 take tinylm's path: valid runs are encoded as text, each stray
byte becomes its single-byte token. The data (`TOKENIZER`) is the byte -> id table, the merges
as (left id, right id, merged id) in rank order, and the EOS id; each token's bytes follow
from the merges.
"""

from __future__ import annotations

import itertools
import unicodedata

# %% export

WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                       "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
NEWER_UNICODE = (  # (first, last, class): letters/digits added after Unicode 14
    (0x1C89, 0x1C8A, "L"), (0xA7CB, 0xA7CD, "L"), (0xA7DA, 0xA7DC, "L"), (0x105C0, 0x105F3, "L"),
    (0x10D40, 0x10D49, "N"), (0x10D4A, 0x10D65, "L"), (0x10D6F, 0x10D85, "L"),
    (0x10EC2, 0x10EC4, "L"), (0x1123F, 0x11240, "L"), (0x11380, 0x11389, "L"),
    (0x1138B, 0x1138B, "L"), (0x1138E, 0x1138E, "L"), (0x11390, 0x113B5, "L"),
    (0x113B7, 0x113B7, "L"), (0x113D1, 0x113D1, "L"), (0x113D3, 0x113D3, "L"),
    (0x116D0, 0x116E3, "N"), (0x11BC0, 0x11BE0, "L"), (0x11BF0, 0x11BF9, "N"),
    (0x11F02, 0x11F02, "L"), (0x11F04, 0x11F10, "L"), (0x11F12, 0x11F33, "L"),
    (0x11F50, 0x11F59, "N"), (0x1342F, 0x1342F, "L"), (0x13441, 0x13446, "L"),
    (0x13460, 0x143FA, "L"), (0x16100, 0x1611D, "L"), (0x16130, 0x16139, "N"),
    (0x16D40, 0x16D6C, "L"), (0x16D70, 0x16D79, "N"), (0x18CFF, 0x18CFF, "L"),
    (0x1B132, 0x1B132, "L"), (0x1B155, 0x1B155, "L"), (0x1CCF0, 0x1CCF9, "N"),
    (0x1D2C0, 0x1D2D3, "N"), (0x1DF25, 0x1DF2A, "L"), (0x1E030, 0x1E06D, "L"),
    (0x1E4D0, 0x1E4EB, "L"), (0x1E4F0, 0x1E4F9, "N"), (0x1E5D0, 0x1E5ED, "L"),
    (0x1E5F0, 0x1E5F0, "L"), (0x1E5F1, 0x1E5FA, "N"), (0x2B739, 0x2B739, "L"),
    (0x2EBF0, 0x2EE5D, "L"), (0x31350, 0x323AF, "L"))
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def char_class(ch: str) -> str:
    """"S" white space, "L" letter, "N" number, "P" anything else (as the pattern sees it)."""
    if ch in WHITESPACE:
        return "S"
    category = unicodedata.category(ch)
    if category == "Cn":
        code = ord(ch)
        for first, last, kind in NEWER_UNICODE:
            if first <= code <= last:
                return kind
    return category[0] if category[0] in "LN" else "P"


def pre_tokenize(text: str) -> list[str]:
    """Split text as GPT-2's pattern does; the pieces join back to `text`."""
    classes = [char_class(ch) for ch in text]
    pieces, i, n = [], 0, len(text)
    while i < n:
        end = 0
        if text[i] == "'":
            end = next((i + len(c) for c in CONTRACTIONS if text.startswith(c, i)), 0)
        if not end and classes[i] == "S":
            run = i
            while run < n and classes[run] == "S":
                run += 1
            if run == n or run - i > 1:  # s+(?!S): a run, less the space before a non-space
                end = run if run == n else run - 1
            elif text[i] != " ":  # a lone white space before a non-space: s+
                end = run
        if not end:  # ` ?L+`, ` ?N+` or ` ?[^sLN]+`: an optional space, then one class
            start = i + 1 if text[i] == " " else i
            end = start + 1
            while end < n and classes[end] == classes[start]:
                end += 1
        pieces.append(text[i:end])
        i = end
    return pieces


class Tokenizer:
    def __init__(self, data: dict):
        self.eos_id, self.vocab_size = data["eos_id"], data["vocab_size"]
        self.byte_ids = data["byte_ids"]  # byte value -> token id
        flat = data["merges"]  # (left, right, merged) per merge, in rank order
        self.merges = {(flat[j], flat[j + 1]): (j // 3, flat[j + 2])
                       for j in range(0, len(flat), 3)}
        self.id_bytes = [b""] * self.vocab_size
        for byte, token in enumerate(self.byte_ids):
            self.id_bytes[token] = bytes([byte])
        for (left, right), (_, merged) in self.merges.items():  # dicts keep rank order
            self.id_bytes[merged] = self.id_bytes[left] + self.id_bytes[right]
        self.cache: dict[str, list[int]] = {}

    def encode(self, text) -> list[int]:
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: take the byte path, as tinylm does
                text = text.encode("utf-8", errors="surrogateescape")
            else:
                return self.encode_text(text)
        ids, run = [], []
        for ch in bytes(text).decode("utf-8", errors="surrogateescape"):
            if "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8: its own token
                ids += self.encode_text("".join(run))
                ids.append(self.byte_ids[ord(ch) - 0xDC00])
                run = []
            else:
                run.append(ch)
        return ids + self.encode_text("".join(run))

    def encode_text(self, text: str) -> list[int]:
        ids = []
        for piece in pre_tokenize(text):
            if piece not in self.cache:
                self.cache[piece] = self.merge([self.byte_ids[b] for b in piece.encode("utf-8")])
            ids += self.cache[piece]
        return ids

    def merge(self, symbols: list[int]) -> list[int]:
        while len(symbols) > 1:
            best = min((self.merges.get(pair, (1 << 62, 0))[0], j)
                       for j, pair in enumerate(itertools.pairwise(symbols)))
            rank, j = best
            if rank == 1 << 62:
                break
            symbols[j:j + 2] = [self.merges[(symbols[j], symbols[j + 1])][1]]
        return symbols

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self.id_bytes[int(i)] for i in ids)
