"""Data mixtures: `--data c4:0.7,fineweb-edu-stream:0.3` trains on several sources by weight.

A mixture spec is a comma-separated list of `NAME[:WEIGHT]` (weights default to 1 and are
normalised); a single name is a mixture of one and trains exactly as before. Each source keeps
its own token cache (`pack.load_or_build`), so adding a source rebuilds nothing else. Batches
stay a pure function of (seed, step, micro-step): each row's source is drawn by weight from the
same seeded generator that then draws its window, so a resumed run reads the same batches and
ranks still take their slice of one global batch. The validation set takes from each source
its share of the fixed validation windows, in proportion to the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from tinylm.errors import TinyLMError


def parse_mixture(spec: str) -> list[tuple[str, float]]:
    """[(name, weight)] with weights summing to 1; a name may be a path (no commas)."""
    if not isinstance(spec, str) or not spec.strip():
        raise TinyLMError("--data names no data set")
    parts = []
    for item in spec.split(","):
        name, sep, weight = item.strip().rpartition(":")
        if not sep or not _is_number(weight):  # no weight (a colon may belong to hf:NAME)
            name, weight = item.strip(), "1"
        value = float(weight)
        if not (math.isfinite(value) and value > 0):
            raise TinyLMError(f"--data: the weight of {name!r} must be a number > 0, got "
                              f"{weight!r}")
        parts.append((name, value))
    names = [n for n, _ in parts]
    if len(set(names)) != len(names) or not all(names):
        raise TinyLMError(f"--data: each source once, by name: {spec!r}")
    total = sum(w for _, w in parts)
    return [(n, w / total) for n, w in parts]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass
class MixedTokens:
    """Token arrays of several sources and their weights (what `train_batch` samples from)."""

    names: list[str]
    arrays: list[np.ndarray]
    weights: np.ndarray

    def __len__(self) -> int:
        return sum(len(a) for a in self.arrays)


def mixture_batch(mixed: MixedTokens, seq_len: int, global_batch: int, seed: int, step: int,
                  micro: int = 0, rank: int = 0, world: int = 1):
    """`sampler.train_batch` for a mixture: a source per row by weight, then a window in it."""
    for name, tokens in zip(mixed.names, mixed.arrays):
        if len(tokens) <= seq_len + 1:
            raise TinyLMError(f"data source {name!r} has only {len(tokens)} tokens: too few for "
                              f"windows of {seq_len + 1}")
    rng = np.random.default_rng([seed, step, micro])
    sources = rng.choice(len(mixed.arrays), size=global_batch, p=mixed.weights)
    fractions = rng.random(global_batch)
    per_rank = global_batch // world
    rows = []
    for i in range(rank * per_rank, (rank + 1) * per_rank):
        tokens = mixed.arrays[sources[i]]
        start = int(fractions[i] * (len(tokens) - seq_len - 1))
        rows.append(tokens[start:start + seq_len + 1])
    windows = torch.from_numpy(np.stack(rows).astype(np.int64))
    return windows[:, :-1], windows[:, 1:]


def mixture_validation(mixed: MixedTokens, seq_len: int, batch: int, n_batches: int):
    """The fixed validation windows: each source's first ones, in proportion to its weight."""
    total = n_batches * batch
    windows = []
    for tokens, weight in zip(mixed.arrays, mixed.weights):
        count = min(max(1, round(total * float(weight))), (len(tokens) - 1) // seq_len)
        windows += [tokens[i * seq_len:i * seq_len + seq_len + 1] for i in range(count)]
    for i in range(0, len(windows), batch):
        chunk = torch.from_numpy(np.stack(windows[i:i + batch]).astype(np.int64))
        yield chunk[:, :-1], chunk[:, 1:]
