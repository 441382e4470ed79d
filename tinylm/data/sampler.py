"""Deterministic batches: the batch of step s is a pure function of (seed, s, micro-step).

No sampler state is carried between steps, so a resumed run reads exactly the batches an
uninterrupted run would have read, and data-parallel ranks can each take their slice of one
global batch (same global batch for any number of processes).
"""

from __future__ import annotations

import numpy as np
import torch


def train_batch(tokens: np.ndarray, seq_len: int, global_batch: int, seed: int, step: int,
                micro: int = 0, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of seq_len+1 tokens; returns this rank's (x, y), each (batch, seq_len).
    `tokens` may be a `mixture.MixedTokens` (several sources by weight)."""
    from tinylm.data.curriculum import CurriculumTokens
    from tinylm.data.mixture import MixedTokens, mixture_batch

    if hasattr(tokens, "train_batch"):  # a source that makes its own batches (chat rows)
        return tokens.train_batch(seq_len, global_batch, seed, step, micro, rank, world)
    if isinstance(tokens, MixedTokens):
        return mixture_batch(tokens, seq_len, global_batch, seed, step, micro, rank, world)
    if isinstance(tokens, CurriculumTokens):  # the easy prefix this step may draw from
        tokens = tokens.visible(step, seq_len)
    n = len(tokens)
    if n <= seq_len + 1:
        raise ValueError(f"only {n} tokens: too few for windows of {seq_len + 1}")
    rng = np.random.default_rng([seed, step, micro])  # SeedSequence mixes the three
    starts = rng.integers(0, n - seq_len - 1, size=global_batch)
    per_rank = global_batch // world
    mine = starts[rank * per_rank:(rank + 1) * per_rank]
    windows = np.stack([tokens[s:s + seq_len + 1] for s in mine]).astype(np.int64)
    windows = torch.from_numpy(windows)
    return windows[:, :-1], windows[:, 1:]


def validation_batches(tokens: np.ndarray, seq_len: int, batch: int, n_batches: int):
    """The first n_batches * batch disjoint windows of the validation split: the same fixed set
    at every evaluation, so validation losses are comparable across steps and runs."""
    from tinylm.data.mixture import MixedTokens, mixture_validation

    if hasattr(tokens, "validation_batches"):
        yield from tokens.validation_batches(seq_len, batch, n_batches)
        return
    if isinstance(tokens, MixedTokens):
        yield from mixture_validation(tokens, seq_len, batch, n_batches)
        return
    span = seq_len + 1
    available = (len(tokens) - 1) // seq_len
    count = min(n_batches * batch, available)
    starts = np.arange(count) * seq_len
    for i in range(0, count, batch):
        chunk = np.stack([tokens[s:s + span] for s in starts[i:i + batch]]).astype(np.int64)
        chunk = torch.from_numpy(chunk)
        yield chunk[:, :-1], chunk[:, 1:]
