"""The text normalisations the detectors share, each defined once.

- `dedup_key`: what makes two rows "the same" for exact dedup. Unicode NFKC, case folded, every
  Unicode punctuation and symbol character (categories P* and S*) deleted, runs of whitespace
  collapsed to one space, ends stripped. So "Hello, World!" and "hello world" are one row;
  digits and letters are never touched.
- `shingles`: the sets MinHash estimates the Jaccard of: word 5-grams of the dedup
  normalisation (datatrove's MinhashConfig default, n_grams=5). A row of fewer than 5 words
  is one shingle, itself. (`dedup.shingle_hashes` hashes the same shingles for MinHash.)
- `lm_eval_words`: lm-eval's decontamination normalisation, read from
  EleutherAI/lm-evaluation-harness lm_eval/decontamination/janitor.py (`Janitor.
  normalize_string`, `word_ngrams`): ASCII letters lower-cased, ASCII punctuation
  (string.punctuation) deleted, then split on whitespace; an n-gram is n consecutive words
  joined by one space. Non-ASCII letters are left as they are, as there.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from collections.abc import Iterator

import numpy as np

SHINGLE_WORDS = 5
_SPACE = re.compile(r"\s+")
_DROP_CATEGORIES = ("P", "S")


class _DropTable(dict):
    """str.translate table deleting Unicode punctuation and symbols, filled in as code points
    are met (building it for all 1.1 M code points up front costs a second per process)."""

    def __missing__(self, code: int):
        value = None if unicodedata.category(chr(code))[0] in _DROP_CATEGORIES else code
        self[code] = value
        return value


_DROP_TABLE = _DropTable()


def dedup_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().translate(_DROP_TABLE)
    return _SPACE.sub(" ", text).strip()


def dedup_key(text: str, normalised: str | None = None) -> bytes:
    """16-byte digest of the normalised text: equal keys mean equal normalised rows."""
    normalised = dedup_text(text) if normalised is None else normalised
    return hashlib.blake2b(normalised.encode("utf-8", "surrogatepass"),
                           digest_size=16).digest()


def shingles(text: str, n: int = SHINGLE_WORDS, normalised: str | None = None) -> list[bytes]:
    words = (dedup_text(text) if normalised is None else normalised).split(" ")
    if len(words) < n:
        return [" ".join(words).encode("utf-8")]
    return [" ".join(words[i:i + n]).encode("utf-8") for i in range(len(words) - n + 1)]


# lm-eval's Janitor: ASCII upper -> lower, string.punctuation deleted.
_LM_EVAL_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase,
                               string.punctuation)


def lm_eval_words(text: str) -> list[str]:
    return text.translate(_LM_EVAL_TABLE).split()


def word_ngrams(words: list[str], n: int) -> Iterator[str]:
    for i in range(len(words) - n + 1):
        yield " ".join(words[i:i + n])


# Stable word ids (blake2b, not Python's salted `hash`), remembered per process: the
# vocabulary of a corpus is small next to its size.
_WORD_IDS: dict[str, int] = {}
_MAX_REMEMBERED_WORDS = 2_000_000
_BASE = np.uint64(0x100000001B3)  # the FNV-1 64-bit prime, as a multiplier


def word_id(word: str) -> int:
    wid = _WORD_IDS.get(word)
    if wid is None:
        wid = int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"),
                                             digest_size=8).digest(), "little")
        if len(_WORD_IDS) < _MAX_REMEMBERED_WORDS:
            _WORD_IDS[word] = wid
    return wid


_NUMPY_FROM = 48
_MASK = (1 << 64) - 1
_BASE_INT = int(_BASE)


def _python_ngram_hash(words: list[str]) -> int:
    """`ngram_hashes` of one n-gram in Python ints (Horner's rule, mod 2^64): same value."""
    value, base, ids = 0, _BASE_INT, _WORD_IDS
    for w in words:
        wid = ids.get(w)
        value = (value * base + (wid if wid is not None else word_id(w))) & _MASK
    return (value + len(words)) & _MASK


def ngram_hashes(words: list[str], n: int) -> np.ndarray:
    """A stable 64-bit hash of every run of n consecutive words (uint64, wrapping arithmetic):
    sum_j id(word[i+j]) * BASE^(n-1-j), plus n so different lengths differ."""
    if len(words) < n or n <= 0:
        return np.zeros(0, dtype=np.uint64)
    if len(words) < _NUMPY_FROM:  # numpy's per-call cost dominates short inputs
        return np.array([_python_ngram_hash(words[i:i + n]) for i in
                         range(len(words) - n + 1)], dtype=np.uint64)
    ids = np.fromiter((word_id(w) for w in words), dtype=np.uint64, count=len(words))
    powers = _BASE ** np.arange(n - 1, -1, -1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        windows = np.lib.stride_tricks.sliding_window_view(ids, n)
        return (windows * powers).sum(axis=1, dtype=np.uint64) + np.uint64(n)


# A sentence ends at . ! ? (then space) or at a line break: where a planted benchmark sentence
# shorter than the n-gram can still be matched whole.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s.strip()]
