"""Finite scalar quantization (FSQ): Mentzer, Minnen, Agustsson, Tschannen, "Finite Scalar
Quantization: VQ-VAE Made Simple" (2023), arXiv:2309.15505.

Each of the d channels of a latent is squashed into a bounded interval and rounded to one of
L_i evenly spaced values; the code of a position is the tuple of its d rounded values, so the
implicit codebook holds prod(L_i) codes and has no parameters to learn, collapse or re-seed.
The paper's recommended levels for a 2^10 codebook are [8, 5, 5, 5] (1,000 codes).

Facts taken from the paper (and its reference notebook, google-research `fsq/fsq.ipynb`),
written here in our own code:
- bound: z -> tanh(z + shift) * half_l - offset, with half_l = (L - 1)(1 - eps) / 2; an even L
  needs offset 0.5 (and a matching shift atanh(offset / half_l)) so the rounded values land on
  L distinct integers, not L + 1;
- round with a straight-through estimator: forward is round(), backward is the identity;
- codes are the rounded values divided by L // 2, so every channel lies in [-1, 1];
- an index is the mixed-radix number of the digits (rounded value + L // 2) with basis
  cumprod([1, L_0, L_1, ...]).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity backward (the straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


class FSQ(nn.Module):
    """Quantizes the channel dim (dim 1) of a (B, d, H, W) latent; d = len(levels)."""

    def __init__(self, levels: tuple[int, ...] | list[int], eps: float = 1e-3):
        super().__init__()
        if not levels or any(int(n) < 2 for n in levels):
            raise ValueError(f"FSQ levels must each be >= 2, got {list(levels)}")
        self.levels = tuple(int(n) for n in levels)
        self.eps = eps
        lv = torch.tensor(self.levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor((1,) + self.levels[:-1], dtype=torch.int64), 0)
        # buffers, not parameters: nothing here is learned, and non-persistent so the state
        # dict holds only learned weights (the levels live in the config)
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    @property
    def dim(self) -> int:
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def bits_per_code(self) -> int:
        """Bits of a fixed-width code index (10 for [8, 5, 5, 5])."""
        return max(1, math.ceil(math.log2(self.codebook_size)))

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.view(1, -1, *([1] * (ndim - 2)))  # (1, d, 1, 1) for images

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash z (B, d, ...) so that round() gives exactly L_i values per channel."""
        lv = self._view(self._levels, z.ndim)
        half_l = (lv - 1) * (1 - self.eps) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, d, ...) -> codes (B, d, ...) in [-1, 1], gradients straight through."""
        half_width = self._view(self._levels // 2, z.ndim)
        return round_ste(self.bound(z)) / half_width

    def quantize_values(self, bounded: torch.Tensor) -> torch.Tensor:
        """Already-bounded values (e.g. a block's mean) -> the nearest codes."""
        half_width = self._view(self._levels // 2, bounded.ndim)
        return torch.round(bounded) / half_width

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, d, ...) -> int64 indices (B, ...) in [0, prod(levels))."""
        half_width = self._view(self._levels // 2, codes.ndim)
        digits = torch.round(codes * half_width + half_width).long()
        return (digits * self._view(self._basis, codes.ndim)).sum(1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Int indices (B, ...) -> codes (B, d, ...); inverse of `codes_to_indices`."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"code index out of range [0, {self.codebook_size})")
        idx = indices.long().unsqueeze(1)                                   # (B, 1, ...)
        basis = self._view(self._basis, idx.ndim)
        lv = self._view(self._levels, idx.ndim).long()
        digits = (idx // basis) % lv                                         # (B, d, ...)
        half_width = self._view(self._levels // 2, idx.ndim)
        return (digits.float() - half_width) / half_width
