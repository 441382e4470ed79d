"""An image <-> a qkvae token stream: encoder, quadtree merging at a tau or a token budget,
serialisation; and back. The reconstruction `encode` reports is exactly what `decode` of its
stream returns (both decode the same merged code grid)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tinylm.errors import TinyLMError
from tinylm.image.io import to_tensor, to_uint8
from tinylm.image.quadtree import (
    Header,
    Quadtree,
    analyse,
    merged_grid,
    read_stream,
    tau_for_budget,
    write_stream,
)


@dataclass
class Encoded:
    stream: bytes
    tokens: int
    full_tokens: int
    tau: float
    structure_bits: int
    code_bits: int
    height: int
    width: int

    @property
    def bits(self) -> int:
        return 8 * len(self.stream)

    @property
    def bpp(self) -> float:
        return self.bits / (self.height * self.width)


class Codec:
    """A loaded qkvae with the per-image analysis cached, so sweeping tau is cheap."""

    def __init__(self, model):
        self.model = model.eval()
        self.fsq = model.fsq
        self.factor = model.config.factor

    @torch.no_grad()
    def analyse(self, rgb: np.ndarray, tau_max: float | None = None,
                max_level: int | None = None):
        """(tree, full-grid reconstruction as uint8) of an RGB uint8 image."""
        x = to_tensor(rgb)
        size = (x.shape[2], x.shape[3])
        latent = self.model.encode_latent(x)                         # (1, d, gh, gw)
        reference = self.model.decode(self.fsq.quantize_values(latent), size)
        tree = analyse(latent, self.fsq, lambda q: self.model.decode(q, size), reference,
                       self.factor, tau_max, max_level)
        return tree, to_uint8(reference)

    def tau_for(self, tree: Quadtree, tau: float | None, budget: float | None) -> float:
        if budget is not None:
            if not 0 < budget <= 1:
                raise TinyLMError(f"--budget is a fraction of the full grid in (0, 1], got {budget}")
            return tau_for_budget(tree, max(1, int(budget * tree.full_tokens)))
        if tau is None or tau < 0:
            raise TinyLMError(f"tau must be >= 0, got {tau}")
        return float(tau)

    def encode(self, rgb: np.ndarray, gray: bool = False, tau: float | None = 0.0,
               budget: float | None = None, tree: Quadtree | None = None) -> Encoded:
        if tree is None:
            tree, _ = self.analyse(rgb, None if budget is not None else tau)
        tau = self.tau_for(tree, tau, budget)
        header = Header(rgb.shape[0], rgb.shape[1], gray, self.factor, self.fsq.levels)
        s = write_stream(header, tree, tau)
        return Encoded(s.data, s.tokens, tree.full_tokens, tau, s.structure_bits, s.code_bits,
                       rgb.shape[0], rgb.shape[1])

    @torch.no_grad()
    def decode_grid(self, grid: np.ndarray, height: int, width: int) -> np.ndarray:
        codes = self.fsq.indices_to_codes(torch.from_numpy(grid)[None])    # (1, d, gh, gw)
        return to_uint8(self.model.decode(codes, (height, width)))

    def reconstruct(self, tree: Quadtree, tau: float, height: int, width: int) -> np.ndarray:
        """The image `decode` would return for this tree at tau (no stream round trip)."""
        return self.decode_grid(merged_grid(tree, tau), height, width)

    def decode(self, data: bytes) -> tuple[np.ndarray, bool, int]:
        """(RGB uint8, grayscale source?, tokens) of a stream."""
        header, grid, tokens = read_stream(data)
        if header.levels != self.fsq.levels or header.factor != self.factor:
            raise TinyLMError(f"stream was coded with FSQ levels {list(header.levels)} and "
                              f"factor {header.factor}; this model has {list(self.fsq.levels)} "
                              f"and {self.factor}")
        return self.decode_grid(grid, header.height, header.width), header.gray, tokens
