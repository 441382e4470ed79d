"""Rows whose claimed `source` does not match what they contain.

Two signals, reported separately:

1. Relabelled clones (exact): a row that is a copy of an `--against` corpus NAME but claims
   another source (the blog's "reposts from unrelated sources relabelled as the real thing").
   Found by the clone index of `dedup.py`; as reliable as the clone detection itself.
2. Source profiles (statistical): each claimed source gets a profile, the mean of its rows'
   L2-normalised hashed character 4-gram count vectors (2^16 buckets, over the lower-cased
   UTF-8 bytes of the row's first 4,000 characters); a row is flagged when its cosine
   similarity to another source's profile beats its own source's by more than `margin`
   (0.05). A nearest-centroid test (Rocchio), built in one streaming pass of sums per source
   and used in a second pass. The feature is scikit-learn's HashingVectorizer(char 4-grams)
   in spirit; it is vectorised here in numpy because sklearn's character analyser is a
   Python loop (10 ms a row on the CI box, the slowest part of the audit).

Limits of (2), measured on the planted corpus (see the audit report): it separates sources
that read differently (children's stories vs web text) and cannot separate two kinds of web
text (C4 vs FineWeb-Edu rows are often closer to the other's profile: at margin 0 about a
third of C4 rows would be flagged, at 0.05 none). It needs two or more claimed sources, and
a profile polluted by many relabelled rows drifts towards them. So (2) is evidence for a
reviewer; only (1) fails an audit by default.
"""

from __future__ import annotations

import numpy as np

from tinylm.data.curate.settings import ProfileConfig

N_FEATURES = 2 ** 16
PROFILE_CHARS = 4000
_GOLDEN = np.uint32(2654435761)  # Knuth's multiplicative hash constant


def char_profile(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The row's unit vector of hashed byte 4-gram counts, sparse: (buckets, weights)."""
    data = np.frombuffer(text[:PROFILE_CHARS].lower().encode("utf-8", "replace"),
                         dtype=np.uint8).astype(np.uint32)
    if len(data) < 4:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    grams = data[:-3] << 24 | data[1:-2] << 16 | data[2:-1] << 8 | data[3:]
    with np.errstate(over="ignore"):
        hashed = (grams * _GOLDEN) >> np.uint32(32 - 16)
    buckets, counts = np.unique(hashed, return_counts=True)
    weights = counts.astype(np.float64)
    return buckets.astype(np.int64), weights / np.linalg.norm(weights)


def profile_sums(rows: list[tuple[str, str]]) -> dict[str, tuple[np.ndarray, int]]:
    """Per source, (sum of the rows' unit vectors, row count) for (source, text) pairs."""
    out: dict[str, tuple[np.ndarray, int]] = {}
    for source, text in rows:
        if source not in out:
            out[source] = (np.zeros(N_FEATURES), 0)
        buckets, weights = char_profile(text)
        out[source][0][buckets] += weights  # buckets are unique, so this adds each once
        out[source] = (out[source][0], out[source][1] + 1)
    return out


def merge_sums(total: dict, part: dict) -> None:
    for source, (vector, count) in part.items():
        if source in total:
            total[source] = (total[source][0] + vector, total[source][1] + count)
        else:
            total[source] = (vector, count)


class SourceProfiles:
    def __init__(self, sums: dict[str, tuple[np.ndarray, int]],
                 config: ProfileConfig = ProfileConfig()):
        self.config = config
        self.names = sorted(s for s, (_, count) in sums.items() if count >= config.min_rows)
        if self.names:
            centroids = np.stack([sums[s][0] for s in self.names])
            self.centroids = centroids / np.maximum(
                np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        else:
            self.centroids = np.zeros((0, N_FEATURES))
        self.by_feature = np.ascontiguousarray(self.centroids.T)  # rows gathered per bucket

    @property
    def usable(self) -> bool:
        return len(self.names) >= 2

    def flags(self, rows: list[tuple[str, str, str]]) -> list[dict]:
        """For (row id, source, text): the rows closer to another source's profile."""
        scored = [(i, s, t) for i, s, t in rows if s in self.names]
        if not self.usable or not scored:
            return []
        out = []
        for row_id, source, text in scored:
            own = self.names.index(source)
            buckets, weights = char_profile(text)
            sims = weights @ self.by_feature[buckets]
            own_sim = float(sims[own])
            sims[own] = -1.0
            best = int(np.argmax(sims))
            if sims[best] > own_sim + self.config.margin:
                out.append({"row": row_id, "claimed": source, "looks_like": self.names[best],
                            "claimed_similarity": round(own_sim, 3),
                            "other_similarity": round(float(sims[best]), 3)})
        return out
