"""Quadtree merging of a code grid, and the token stream that stores the tree and its codes.

The blog ("the qkvae works now"): "it walks the grid as a quadtree and merges any block that is
basically uniform, and the merge only happens when it actually saves tokens, so a fully
detailed image just costs the full grid and never more." Adaptive-length tokenizers (FlexTok,
One-D-Piece, ElasticTok) vary the count with a learned ordering; this one keeps the 2-D grid and
lets a quadtree decide, which needs no retraining.

The grid (gh, gw) sits in one square root block of 2^K cells a side (K = ceil(log2 max(gh, gw))),
the rest of the square being empty. A block at level k covers 2^k x 2^k cells; its
*representative* is the FSQ code nearest to the mean of its cells' bounded (unrounded) latents.

Cost of a block. Decode the grid with every block of level k replaced by its representative,
and measure, over the block's pixels, the mean absolute change from the full-grid
reconstruction, in 8-bit levels (0-255): that is err_k. A block's cost is
max(err_k, its children's costs) (a cell costs 0), so costs only grow toward the root.

Merging at budget tau: a block with more than one cell in the grid is merged when its cost is
<= tau; the tokens are the top-most merged blocks plus the cells under none. Because costs grow
toward the root, the merged blocks form a downward-closed set and the token count never grows
with tau; because only blocks of two or more cells merge, it is never above the full grid. One
decode per level computes all costs; any tau after that costs no decode.

Why "change from the full-grid reconstruction" and not "error against the original": it says
what merging itself costs, so tau = 0 merges only what changes nothing (a flat region whose
cells already share one code), and the decoder can be judged separately at the full grid.

Stream ("QKV1"), big-endian header then a bit string, pre-order from the root:
    magic 4s | height u32 | width u32 | flags u8 (bit 0: grayscale source) | factor u8 |
    n_levels u8 | levels u8 x n_levels
    node with 0 cells in the grid: nothing;  with 1 cell: its code (ceil(log2 prod(levels)) bits)
    node with >= 2 cells: 1 bit (1 = merged: the representative's code follows;
                                 0 = split: the four children follow, in TL TR BL BR order)
Codes are fixed width (no entropy coding): the reported bits are an upper bound that any
entropy coder would only lower.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tinylm.errors import TinyLMError

MAGIC = b"QKV1"
HEADER = struct.Struct(">4sIIBBB")


# --------------------------------------------------------------------------- analysis

@dataclass
class Quadtree:
    """Everything merging needs, per level k = 0..K (level 0 = the cells themselves)."""

    grid: tuple[int, int]
    codes: list[np.ndarray]     # level k: (ceil(gh/2^k), ceil(gw/2^k)) int64 code indices
    costs: list[np.ndarray]     # same shapes, float64; level 0 all zero
    cells: list[np.ndarray]     # same shapes: cells of the block inside the grid

    @property
    def depth(self) -> int:
        return len(self.codes) - 1

    @property
    def full_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


def _root_level(gh: int, gw: int) -> int:
    return max(0, math.ceil(math.log2(max(gh, gw))))


def _block_sum(t: torch.Tensor, side: int) -> torch.Tensor:
    """Sum over side x side blocks of the last two dims, zero-padding up (..., H, W) -> blocks."""
    h, w = t.shape[-2:]
    t = F.pad(t, (0, -w % side, 0, -h % side))
    *lead, H, W = t.shape
    return t.reshape(*lead, H // side, side, W // side, side).sum(dim=(-3, -1))


def _expand(blocks: torch.Tensor, side: int, h: int, w: int) -> torch.Tensor:
    """Repeat each block value over its side x side cells, cropped to (h, w)."""
    return blocks.repeat_interleave(side, -2).repeat_interleave(side, -1)[..., :h, :w]


@torch.no_grad()
def analyse(latent: torch.Tensor, fsq, decode: Callable[[torch.Tensor], torch.Tensor],
            reference: torch.Tensor, factor: int, tau_max: float | None = None,
            max_level: int | None = None) -> Quadtree:
    """Costs and representatives of every block.

    latent: (1, d, gh, gw) bounded, unrounded (FSQ `bound` output); decode: codes (1, d, gh, gw)
    -> image (1, 3, H, W); reference: decode of the full grid; factor: pixels per cell.
    Blocks whose children already cost more than tau_max get cost inf without a decode (a
    speed knob for a known largest tau; None computes every level). Blocks above `max_level`
    (2^max_level cells a side) never merge, which saves their decodes."""
    _, _, gh, gw = latent.shape
    H, W = reference.shape[-2:]
    ones = torch.ones(1, 1, gh, gw)
    codes = [fsq.codes_to_indices(fsq.quantize_values(latent))[0].numpy()]
    costs, cells = [np.zeros((gh, gw))], [np.ones((gh, gw), dtype=np.int64)]
    pixel_valid = torch.ones(1, 1, H, W)
    for k in range(1, _root_level(gh, gw) + 1):
        side = 2 ** k
        count = _block_sum(ones, side)                                  # (1, 1, bh, bw)
        rep = fsq.quantize_values(_block_sum(latent, side) / count)     # (1, d, bh, bw)
        prev = torch.from_numpy(costs[-1])[None, None]
        child_max = F.max_pool2d(F.pad(prev, (0, prev.shape[-1] % 2, 0, prev.shape[-2] % 2)),
                                 2).numpy()[0, 0]
        n = count[0, 0].long().numpy()
        cost = child_max.copy()
        todo = (n > 1) & (child_max <= (math.inf if tau_max is None else tau_max))
        if max_level is not None and k > max_level:
            todo[:] = False
        if todo.any():
            merged = decode(_expand(rep, side, gh, gw))                 # (1, 3, H, W)
            change = (merged - reference).abs().mean(1, keepdim=True) * 255.0
            px = side * factor
            err = (_block_sum(change, px) / _block_sum(pixel_valid, px))[0, 0].numpy()
            cost = np.maximum(child_max, err)
        cost[(n > 1) & ~todo] = math.inf
        codes.append(fsq.codes_to_indices(rep)[0].numpy())
        costs.append(cost)
        cells.append(n)
    return Quadtree((gh, gw), codes, costs, cells)


# --------------------------------------------------------------------------- decisions

def merged_leaves(tree: Quadtree, tau: float) -> list[np.ndarray]:
    """Per level k >= 1, a bool map of the top-most merged blocks at budget tau (index 0: the
    cells left unmerged)."""
    K = tree.depth
    merged = [None] + [(tree.costs[k] <= tau) & (tree.cells[k] > 1) for k in range(1, K + 1)]
    top: list[np.ndarray] = [None] * (K + 1)
    covered = np.zeros_like(tree.cells[K], dtype=bool)                  # above the root: none
    for k in range(K, -1, -1):
        shape = tree.cells[k].shape
        if k < K:  # a block is covered when its parent is covered or merged
            up = covered.repeat(2, 0).repeat(2, 1)[:shape[0], :shape[1]]
            covered = up
        top[k] = (~covered) if k == 0 else merged[k] & ~covered
        if k > 0:
            covered = covered | merged[k]
    return top


def token_count(tree: Quadtree, tau: float) -> int:
    return int(sum(int(t.sum()) for t in merged_leaves(tree, tau)))


def tau_for_budget(tree: Quadtree, max_tokens: int) -> float:
    """The smallest tau whose token count is <= max_tokens (tokens fall as tau grows).
    A budget below what any tau reaches gives the largest finite cost."""
    finite = np.unique(np.concatenate([c[np.isfinite(c)].ravel() for c in tree.costs]))
    lo, hi = 0, len(finite) - 1
    if token_count(tree, float(finite[hi])) > max_tokens:
        return float(finite[hi])
    while lo < hi:  # first index whose tau meets the budget
        mid = (lo + hi) // 2
        if token_count(tree, float(finite[mid])) <= max_tokens:
            hi = mid
        else:
            lo = mid + 1
    return float(finite[lo])


def merged_grid(tree: Quadtree, tau: float) -> np.ndarray:
    """(gh, gw) code indices after merging: each merged block filled with its representative."""
    gh, gw = tree.grid
    out = tree.codes[0].copy()
    for k, top in enumerate(merged_leaves(tree, tau)):
        if k == 0 or not top.any():
            continue
        side = 2 ** k
        fill = np.repeat(np.repeat(np.where(top, tree.codes[k], -1), side, 0), side, 1)[:gh, :gw]
        out = np.where(fill >= 0, fill, out)
    return out


def block_map(tree: Quadtree, tau: float) -> list[tuple[int, int, int]]:
    """(row, col, side in cells) of every merged block, for drawing the token map."""
    found = []
    for k, top in enumerate(merged_leaves(tree, tau)):
        if k > 0:
            found += [(int(r) * 2 ** k, int(c) * 2 ** k, 2 ** k) for r, c in zip(*np.nonzero(top))]
    return found


# --------------------------------------------------------------------------- stream

@dataclass
class Header:
    height: int
    width: int
    gray: bool
    factor: int
    levels: tuple[int, ...]

    @property
    def code_bits(self) -> int:
        return max(1, math.ceil(math.log2(math.prod(self.levels))))

    def grid(self) -> tuple[int, int]:
        return -(-self.height // self.factor), -(-self.width // self.factor)


@dataclass
class Stream:
    data: bytes
    tokens: int
    structure_bits: int
    code_bits: int

    @property
    def bits(self) -> int:
        return 8 * len(self.data)


def write_stream(header: Header, tree: Quadtree, tau: float) -> Stream:
    top = merged_leaves(tree, tau)
    width = header.code_bits
    parts: list[str] = []
    tokens = structure = 0

    def node(k: int, r: int, c: int) -> None:
        nonlocal tokens, structure
        n = int(tree.cells[k][r, c])
        if n > 1:
            structure += 1
            if top[k][r, c]:
                parts.append("1")
            else:
                parts.append("0")
                for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
                    rr, cc = 2 * r + dr, 2 * c + dc
                    if rr < tree.cells[k - 1].shape[0] and cc < tree.cells[k - 1].shape[1]:
                        node(k - 1, rr, cc)
                return
        parts.append(format(int(_single_code(tree, k, r, c)), f"0{width}b"))
        tokens += 1

    node(tree.depth, 0, 0)
    bits = "".join(parts)
    bits += "0" * (-len(bits) % 8)
    payload = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    head = HEADER.pack(MAGIC, header.height, header.width, int(header.gray), header.factor,
                       len(header.levels)) + bytes(header.levels)
    return Stream(head + payload, tokens, structure, tokens * width)


def _single_code(tree: Quadtree, k: int, r: int, c: int) -> int:
    """A merged block's representative; for a one-cell block, that cell's own code."""
    if tree.cells[k][r, c] > 1 or k == 0:
        return tree.codes[k][r, c]
    return tree.codes[0][r * 2 ** k, c * 2 ** k]  # its only cell is the top-left one


def read_header(data: bytes) -> Header:
    if len(data) < HEADER.size or data[:4] != MAGIC:
        raise TinyLMError("not a qkvae token stream (no QKV1 header)")
    _, h, w, flags, factor, n = HEADER.unpack_from(data)
    if len(data) < HEADER.size + n:
        raise TinyLMError("truncated qkvae token stream (header)")
    levels = tuple(data[HEADER.size:HEADER.size + n])
    if h < 1 or w < 1 or factor < 1 or not levels:
        raise TinyLMError("corrupt qkvae token stream header")
    return Header(h, w, bool(flags & 1), factor, levels)


def read_stream(data: bytes) -> tuple[Header, np.ndarray, int]:
    """(header, (gh, gw) code indices, tokens) of a stream from `write_stream`."""
    header = read_header(data)
    gh, gw = header.grid()
    start = HEADER.size + len(header.levels)
    bits = "".join(format(b, "08b") for b in data[start:])
    width, K = header.code_bits, _root_level(gh, gw)
    grid = np.full((gh, gw), -1, dtype=np.int64)
    pos = tokens = 0

    def take(n: int) -> int:
        nonlocal pos
        if pos + n > len(bits):
            raise TinyLMError("truncated qkvae token stream")
        value = int(bits[pos:pos + n], 2)
        pos += n
        return value

    def node(k: int, r: int, c: int) -> None:
        nonlocal tokens
        side = 2 ** k
        y0, x0 = r * side, c * side
        n = max(0, min(gh, y0 + side) - y0) * max(0, min(gw, x0 + side) - x0)
        if n == 0:
            return
        if n > 1 and take(1) == 0:
            for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
                node(k - 1, 2 * r + dr, 2 * c + dc)
            return
        grid[y0:y0 + side, x0:x0 + side] = take(width)
        tokens += 1

    node(K, 0, 0)
    if grid.min() >= math.prod(header.levels):
        raise TinyLMError("corrupt qkvae token stream: code out of range")
    return header, grid, tokens
