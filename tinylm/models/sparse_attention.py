"""Block-sparse causal attention: the pattern on Blink-1's model card.

The Blink-1 card (Glint Research, 2026) lists "subquadratic sparse attention (SSA),
1M-context-capable wiring (block_size=32, top-2 blocks, local window 16)". Those numbers are the
defaults of `BlockSparseConfig`. `block_sparse_attention` plugs into
`common.CausalSelfAttention.attention_fn` (see `enable_block_sparse`), so any family built on
that layer gets sparse attention without a new model class.

Selection rule, for a query at absolute position p (block size B, window w, top_k k):

- local window: keys [s, p] with s = max(0, p - w + 1), the last w positions including p;
- candidate blocks: keys are cut into blocks [jB, (j+1)B). Every block that starts before the
  window (jB < s) is a candidate and stands for its keys in [jB, min((j+1)B, s)): all complete
  blocks before the window, plus at most one block that the window start cuts in two;
- routing: a candidate's score is dot(q_p, mean of the keys it stands for), and the k best
  candidates win (the mean key is a cheap summary of a block, as in MoBA's gate);
- one softmax, scale 1/sqrt(D), over the window's keys and the winning blocks' keys.

Why the cut block stands for its pre-window keys only: no key at or after s enters a block's
mean or a block's key set, so routing cannot see the future and no key is counted twice. And
the candidates plus the window tile [0, p] exactly, so with k >= the number of blocks the
pattern is the full causal mask, which the tests check against dense SDPA. The stricter rule
"complete blocks strictly before the window only" leaves up to B - 1 keys just before the
window that no setting of k can reach.

Routing is per query, not per query block. A gate built from a block's mean query would let a
later query in that block change which keys an earlier one sees: a causality leak through q.

Cost, for T queries over T keys with head dim D:

- attention: O(T (kB + w) D) time, 80 keys per query at the card's settings;
- routing: one score per (query, block), O(T^2 D / B) multiply-adds plus a top-k over T/B
  scores per query. Quadratic in principle, but 1/B of dense attention's QK^T alone, with no
  softmax or value product behind it; per-query routing is the price of the causality above;
- memory: queries go in chunks sized to a fixed budget, so peak memory is O(T D) for the
  inputs, padded copies and output, plus that budget; never a T x T matrix. Under autograd the
  gathered keys of every chunk are kept for backward: O(T (kB + w) D).

The router gets no gradient (top-k is a hard choice, as in MoBA); q, k and v get theirs through
the attention over the keys they select. `block_sparse_attention_reference` builds the same
pattern as a dense (Tq, Tk) mask, query by query, for tests only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.models.common import CausalSelfAttention

# %% export (copied into the single-file export; see export/single_file.py)

# Per-chunk working set, in tensor elements (16 MiB of float32): the gathered keys and values
# and the router's scores of one chunk of queries. Bigger buys little on a CPU once the
# matmuls are this size; smaller adds Python overhead per chunk.
CHUNK_BUDGET = 1 << 22
# Up to this many keys the "mask" kernel runs (a (Tq, Tk) mask per row, dense SDPA over it).
MASK_MAX_KEYS = 512


@dataclass
class BlockSparseConfig:
    """Block-sparse attention settings; defaults are Blink-1's card."""

    block_size: int = 32
    """Keys per routing block."""
    top_k: int = 2
    """Blocks each query picks beyond its window; 0 gives plain sliding-window attention."""
    window: int = 16
    """Local window, in positions, including the query's own."""

    def __post_init__(self):
        for name, low in (("block_size", 1), ("top_k", 0), ("window", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")


# --------------------------------------------------------------------------- sparse path

def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: int,
                           config: BlockSparseConfig, chunk_size: int | None = None,
                           kernel: str = "auto") -> torch.Tensor:
    """Block-sparse causal attention; q (B, H, Tq, D) at positions [pos, pos+Tq), k and v
    (B, H, Tk, D) at positions [0, Tk) with Tk >= pos + Tq -> (B, H, Tq, D).

    Two kernels compute the same pattern: "gather" (chunks of `chunk_size` queries, default
    what fits `CHUNK_BUDGET`; linear memory, for long contexts) and "mask" (the pattern as a
    boolean (Tq, Tk) mask for one SDPA call; quadratic memory, but on short contexts a few
    large ops beat the gather's many small ones: a Blink-1 training step at context 256 runs
    about 2x faster with it, benchmarks/bench_blink_train.py). "auto" takes "mask" up to
    MASK_MAX_KEYS keys unless a chunk_size is given.
    """
    batch, heads, q_len, dim = q.shape
    k_len, bs = k.shape[2], config.block_size
    if k_len < pos + q_len:
        raise ValueError(f"queries reach position {pos + q_len - 1} but there are only "
                         f"{k_len} keys")
    if kernel not in ("auto", "gather", "mask"):
        raise ValueError(f"kernel must be auto, gather or mask, got {kernel!r}")
    if kernel == "mask" or (kernel == "auto" and chunk_size is None and k_len <= MASK_MAX_KEYS):
        mask = block_sparse_mask(q, k, pos, config)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    rows, n_blocks = batch * heads, -(-k_len // bs)
    k_blocks, v_blocks = _blocked(k, bs), _blocked(v, bs)  # (rows, n_blocks, bs, D)
    with torch.no_grad():
        # running key sums inside each block: the last row gives a block's mean, row s-1 the
        # mean of a block cut by a window starting at s
        prefix = k_blocks.detach().cumsum(2)
        means = prefix[:, :, -1] / bs  # (rows, n_blocks, D)
        prefix = prefix.view(rows, n_blocks * bs, dim)
    q = q.reshape(rows, q_len, dim)
    positions = torch.arange(pos, pos + q_len, device=q.device)
    chunk = chunk_size or _chunk_size(rows, n_blocks, dim, config)
    outs = []
    for start in range(0, q_len, chunk):
        sl = slice(start, start + chunk)
        blocks = _route(q[:, sl], prefix, means, positions[sl], config)
        outs.append(_attend(q[:, sl], k_blocks, v_blocks, blocks, positions[sl], config))
    return torch.cat(outs, dim=1).view(batch, heads, q_len, dim)


def block_sparse_mask(q: torch.Tensor, k: torch.Tensor, pos: int, config: BlockSparseConfig
                      ) -> torch.Tensor:
    """The pattern as a boolean mask (B, H, Tq, Tk): True where a query sees a key. The same
    routing as `_route` (block means, the window-cut block scored by its pre-window keys), for
    all queries at once."""
    q_len, k_len, bs, w = q.shape[2], k.shape[2], config.block_size, config.window
    device = q.device
    positions = torch.arange(pos, pos + q_len, device=device)  # (Tq,)
    keys = torch.arange(k_len, device=device)
    start = (positions - w + 1).clamp(min=0)  # window start s per query
    window = (keys >= start[:, None]) & (keys <= positions[:, None])  # (Tq, Tk)
    n_cand = (start + bs - 1) // bs  # candidate blocks: jB < s
    hi = int(n_cand[-1])
    if hi == 0 or config.top_k == 0:
        return window.expand(q.shape[0], q.shape[1], -1, -1)
    with torch.no_grad():
        prefix = _blocked(k.detach(), bs).cumsum(2)  # (B*H, n_blocks, bs, D)
        means = prefix[:, :hi, -1] / bs
        prefix = prefix.view(prefix.shape[0], -1, prefix.shape[-1])
        flat_q = q.detach().reshape(-1, q_len, q.shape[-1])
        scores = flat_q @ means.transpose(1, 2)  # (B*H, Tq, hi)
        last = (n_cand - 1).clamp(min=0)
        cut_mean = prefix[:, (start - 1).clamp(min=0)] / (start - last * bs).clamp(min=1)[:, None]
        cut_score = (flat_q * cut_mean).sum(-1, keepdim=True)
        scores.scatter_(2, last.view(1, -1, 1).expand(scores.shape[0], -1, 1), cut_score)
        late = torch.arange(hi, device=device) >= n_cand[:, None]  # (Tq, hi): not candidates
        scores.masked_fill_(late, float("-inf"))
        chosen = torch.zeros_like(scores, dtype=torch.bool)
        chosen.scatter_(2, scores.topk(min(config.top_k, hi), dim=-1).indices, True)
        chosen &= ~late  # a query with fewer than k candidates picked some non-candidates
        # block choice -> key mask: each block's flag repeated over its B keys. Keys from hi*B
        # on lie at or after every query's window start, so no block reaches them.
        span = min(hi * bs, k_len)
        blocks = chosen.unsqueeze(-1).expand(-1, -1, -1, bs).reshape(*chosen.shape[:2], -1)
        blocks = blocks[..., :span] & (keys[:span] < start[:, None])  # only keys before s
        mask = window.expand(blocks.shape[0], -1, -1).clone()
        mask[..., :span] |= blocks
    return mask.view(*q.shape[:2], q_len, k_len)


def _blocked(x: torch.Tensor, bs: int) -> torch.Tensor:
    """(B, H, T, D) -> (B*H, ceil(T/bs), bs, D), zero-padding the last block; `_attend` never
    lets a query see the padding."""
    batch, heads, length, dim = x.shape
    x = x.reshape(batch * heads, length, dim)
    pad = -length % bs
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(batch * heads, -1, bs, dim)


def _chunk_size(rows: int, n_blocks: int, dim: int, config: BlockSparseConfig) -> int:
    keys = config.top_k * config.block_size + config.window  # keys seen per query
    per_query = rows * (n_blocks + 2 * keys * (dim + 1))  # router scores + gathered k, v, p
    return max(1, CHUNK_BUDGET // per_query)


def _route(q: torch.Tensor, prefix: torch.Tensor, means: torch.Tensor, positions: torch.Tensor,
           config: BlockSparseConfig) -> torch.Tensor:
    """Top-k candidate blocks per query: q (rows, C, D) -> block ids (rows, C, k').

    Where a query has fewer than k candidates the surplus ids point at non-candidates; their
    keys all lie at or after the window start, so `_attend` masks them out.
    """
    bs, rows = config.block_size, q.shape[0]
    start = (positions - config.window + 1).clamp(min=0)  # window start s, (C,)
    n_cand = (start + bs - 1) // bs  # candidates are the blocks with jB < s
    lo, hi = int(n_cand[0]), int(n_cand[-1])  # positions increase, so does n_cand
    if hi == 0 or config.top_k == 0:
        return torch.empty(rows, q.shape[1], 0, dtype=torch.long, device=q.device)
    with torch.no_grad():
        # only blocks someone in the chunk may pick: causal routing costs half of all-blocks
        scores = q @ means[:, :hi].transpose(1, 2)  # (rows, C, hi)
        # rescore each query's last candidate by its keys [last*B, s) alone; for a block the
        # window does not cut, that is its full mean again
        last = (n_cand - 1).clamp(min=0)
        cut_mean = prefix[:, (start - 1).clamp(min=0)] / (start - last * bs).clamp(min=1)[:, None]
        cut_score = (q * cut_mean).sum(-1, keepdim=True)  # (rows, C, 1)
        scores.scatter_(2, last.view(1, -1, 1).expand(rows, -1, 1), cut_score)
        if lo < hi:  # blocks [0, lo) are candidates for every query in the chunk
            late = torch.arange(lo, hi, device=q.device) >= n_cand[:, None]  # (C, hi - lo)
            scores[..., lo:].masked_fill_(late, float("-inf"))
        return scores.topk(min(config.top_k, hi), dim=-1).indices


def _attend(q: torch.Tensor, k_blocks: torch.Tensor, v_blocks: torch.Tensor,
            blocks: torch.Tensor, positions: torch.Tensor, config: BlockSparseConfig
            ) -> torch.Tensor:
    """Softmax attention of q (rows, C, D) over each query's window and chosen blocks.

    The scores of the two key sets are joined for one softmax, but the keys and values are
    not: gathering the blocks' keys and values is most of this function's time already, so
    nothing copies them a second time.
    """
    rows, n, dim = q.shape
    bs, w = config.block_size, config.window
    scale = 1.0 / math.sqrt(dim)
    start = (positions - w + 1).clamp(min=0)
    # chosen blocks' keys (rows, C, k'B, D); a block key counts only before the window start,
    # which drops the window overlap and every non-candidate the router had to pad with
    n_blocks, width = k_blocks.shape[1], blocks.shape[-1] * bs
    flat = (blocks + n_blocks * torch.arange(rows, device=q.device)[:, None, None]).view(-1)
    block_k = k_blocks.reshape(rows * n_blocks, -1).index_select(0, flat).view(rows, n, width, dim)
    block_pos = (blocks[..., None] * bs + torch.arange(bs, device=q.device)).view(rows, n, width)
    block_scores = (q.unsqueeze(2) @ block_k.transpose(2, 3)).squeeze(2)  # (rows, C, k'B)
    block_scores = block_scores.masked_fill(block_pos >= start[:, None], float("-inf"))
    # window keys: one slice covering the chunk's windows, left-padded so that query i's
    # window is rows [i, i + w) of it; unfold views the per-query windows (rows, C, w, D)
    first = int(positions[0]) - w + 1
    lo, hi = max(first, 0), int(positions[-1]) + 1
    win_k = _windows(k_blocks.reshape(rows, -1, dim)[:, lo:hi], lo - first, w)
    win_v = _windows(v_blocks.reshape(rows, -1, dim)[:, lo:hi], lo - first, w)
    win_scores = (q.unsqueeze(2) @ win_k.transpose(2, 3)).squeeze(2)  # (rows, C, w)
    win_pos = positions[:, None] - w + 1 + torch.arange(w, device=q.device)  # (C, w)
    win_scores = win_scores.masked_fill(win_pos < 0, float("-inf"))

    scores = torch.cat((block_scores, win_scores), dim=2) * scale  # never a row of all -inf:
    probs = scores.float().softmax(-1).to(q.dtype)  # a query always sees itself
    out = (probs[..., None, width:] @ win_v).squeeze(2)  # (rows, C, D)
    if width:
        block_v = v_blocks.reshape(rows * n_blocks, -1).index_select(0, flat)
        block_v = block_v.view(rows, n, width, dim)
        out = out + (probs[..., None, :width] @ block_v).squeeze(2)
    return out


def _windows(keys: torch.Tensor, pad: int, w: int) -> torch.Tensor:
    """Left-pad keys (rows, L, D) by `pad` zero rows and view every run of w rows:
    (rows, L + pad - w + 1, w, D)."""
    return F.pad(keys, (0, 0, pad, 0)).unfold(1, w, 1).transpose(2, 3)


# --------------------------------------------------------------------------- reference

def block_sparse_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                     pos: int, config: BlockSparseConfig) -> torch.Tensor:
    """The same pattern as a dense (Tq, Tk) boolean mask, built query by query from the rule
    in the module docstring, then dense SDPA. O(Tq Tk) memory: for tests only."""
    batch, heads, q_len, _ = q.shape
    k_len, bs = k.shape[2], config.block_size
    mask = torch.zeros(batch, heads, q_len, k_len, dtype=torch.bool, device=q.device)
    for i in range(q_len):
        p = pos + i
        s = max(0, p - config.window + 1)
        mask[:, :, i, s:p + 1] = True
        spans = [(j * bs, min((j + 1) * bs, s)) for j in range(-(-s // bs))]
        if not spans or config.top_k == 0:
            continue
        means = torch.stack([k[:, :, a:b].mean(2) for a, b in spans], dim=2)  # (B, H, n, D)
        score = (means @ q[:, :, i, :, None]).squeeze(-1)  # (B, H, n)
        chosen = torch.zeros_like(score, dtype=torch.bool)
        chosen.scatter_(-1, score.topk(min(config.top_k, len(spans)), dim=-1).indices, True)
        key_block = torch.arange(s, device=q.device) // bs  # block of each key before s
        mask[:, :, i, :s] = chosen[..., key_block]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# --------------------------------------------------------------------------- model wiring

def enable_block_sparse(model: nn.Module, config: BlockSparseConfig) -> int:
    """Route every `CausalSelfAttention` in `model` through block-sparse attention; returns
    how many layers changed. A model without one is an error, not a silent no-op."""
    fn = partial(block_sparse_attention, config=config)
    layers = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no CausalSelfAttention layer")
    for layer in layers:
        layer.attention_fn = fn
    return len(layers)


def disable_block_sparse(model: nn.Module) -> int:
    """Put every `CausalSelfAttention` back on dense SDPA; returns how many layers changed."""
    layers = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    for layer in layers:
        layer.attention_fn = None
    return len(layers)
# %% end export
