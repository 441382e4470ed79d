"""Rows whose claimed `source` does not match what they contain.

Two signals, reported separately:

1. Relabelled clones (exact): a row that is a copy of an `--against` corpus NAME but claims
   another source (the blog's "reposts from unrelated sources relabelled as the real thing").
   Found by the clone index of `dedup.py`; as reliable as the clone detection itself.
2. Source profiles (statistical): each claimed source gets a profile, the mean of its rows'
   L2-normalised character 4-gram vectors (scikit-learn's HashingVectorizer, char_wb, 2^18
   features); a row is flagged when its cosine similarity to another source's profile beats
   its own source's by more than `margin` (0.05). A nearest-centroid test (Rocchio), built in
   one streaming pass of sums per source and used in a second pass.

Limits of (2), measured on the planted corpus (see the audit report): it separates sources
that read differently (children's stories vs web text) and cannot separate two kinds of web
text (C4 vs FineWeb-Edu rows are often closer to the other's profile: at margin 0 about a
third of C4 rows would be flagged, at 0.05 none). It needs two or more claimed sources, and
a profile polluted by many relabelled rows drifts towards them. So (2) is evidence for a
reviewer; only (1) fails an audit by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_FEATURES = 2 ** 18


@dataclass(frozen=True)
class ProfileConfig:
    margin: float = 0.05
    """How much closer (cosine) another source's profile must be to flag a row."""
    min_rows: int = 20
    """A source with fewer rows has no profile (too few to say what it looks like)."""


_VECTORIZER = None


def vectorizer():
    global _VECTORIZER
    if _VECTORIZER is None:
        from sklearn.feature_extraction.text import HashingVectorizer

        _VECTORIZER = HashingVectorizer(analyzer="char_wb", ngram_range=(4, 4),
                                        n_features=N_FEATURES, alternate_sign=False,
                                        norm="l2")
    return _VECTORIZER


def profile_sums(rows: list[tuple[str, str]]) -> dict[str, tuple[np.ndarray, int]]:
    """Per source, (sum of the rows' unit vectors, row count) for (source, text) pairs."""
    by_source: dict[str, list[str]] = {}
    for source, text in rows:
        by_source.setdefault(source, []).append(text)
    out = {}
    for source, texts in by_source.items():
        matrix = vectorizer().transform(texts)
        out[source] = (np.asarray(matrix.sum(axis=0)).ravel(), len(texts))
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

    @property
    def usable(self) -> bool:
        return len(self.names) >= 2

    def flags(self, rows: list[tuple[str, str, str]]) -> list[dict]:
        """For (row id, source, text): the rows closer to another source's profile."""
        scored = [(i, s, t) for i, s, t in rows if s in self.names]
        if not self.usable or not scored:
            return []
        matrix = vectorizer().transform([t for _, _, t in scored])
        similarity = np.asarray(matrix @ self.centroids.T)
        out = []
        for k, (row_id, source, _) in enumerate(scored):
            own = self.names.index(source)
            sims = similarity[k].copy()
            own_sim = float(sims[own])
            sims[own] = -1.0
            best = int(np.argmax(sims))
            if sims[best] > own_sim + self.config.margin:
                out.append({"row": row_id, "claimed": source, "looks_like": self.names[best],
                            "claimed_similarity": round(own_sim, 3),
                            "other_similarity": round(float(sims[best]), 3)})
        return out
