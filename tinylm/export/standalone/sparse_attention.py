"""Exported part: block-sparse causal attention (cf. `tinylm.models.sparse_attention`).

The same selection rule and the same arithmetic as tinylm's: for a query at position p, the
keys of its local window [p - w + 1, p] plus the top-k blocks of B keys before the window,
ranked by dot(q, mean key of the block); one softmax over both. Queries go in chunks of the
same size as tinylm's (a chunk's size can change how a matmul is blocked, and so its rounding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# %% export

CHUNK_BUDGET = 1 << 22  # per-chunk working set, in tensor elements (as tinylm)
MASK_MAX_KEYS = 512  # up to this many keys, the mask kernel (as tinylm)


class BlockSparse:
    """attention_fn(q, k, v, pos) for Attention: q (B, H, Tq, D) at [pos, pos+Tq), k and v
    (B, H, Tk, D) at [0, Tk) -> (B, H, Tq, D)."""

    def __init__(self, block_size: int = 32, top_k: int = 2, window: int = 16):
        self.block_size, self.top_k, self.window = block_size, top_k, window

    def __call__(self, q, k, v, pos: int):
        batch, heads, q_len, dim = q.shape
        k_len, bs = k.shape[2], self.block_size
        if k_len <= MASK_MAX_KEYS:  # short contexts: the pattern as a mask, one SDPA call
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask(q, k, pos))
        rows, n_blocks = batch * heads, -(-k_len // bs)
        k_blocks, v_blocks = blocked(k, bs), blocked(v, bs)  # (rows, n_blocks, bs, D)
        prefix = k_blocks.detach().cumsum(2)  # running key sums inside each block
        means = prefix[:, :, -1] / bs  # (rows, n_blocks, D)
        prefix = prefix.view(rows, n_blocks * bs, dim)
        q = q.reshape(rows, q_len, dim)
        positions = torch.arange(pos, pos + q_len, device=q.device)
        keys = self.top_k * bs + self.window
        chunk = max(1, CHUNK_BUDGET // (rows * (n_blocks + 2 * keys * (dim + 1))))
        outs = []
        for start in range(0, q_len, chunk):
            sl = slice(start, start + chunk)
            blocks = self.route(q[:, sl], prefix, means, positions[sl])
            outs.append(self.attend(q[:, sl], k_blocks, v_blocks, blocks, positions[sl]))
        return torch.cat(outs, dim=1).view(batch, heads, q_len, dim)

    def mask(self, q, k, pos: int):
        """(B, H, Tq, Tk) boolean: the window, plus each query's top-k blocks before it."""
        q_len, k_len, bs, w = q.shape[2], k.shape[2], self.block_size, self.window
        positions = torch.arange(pos, pos + q_len, device=q.device)
        keys = torch.arange(k_len, device=q.device)
        start = (positions - w + 1).clamp(min=0)  # window start s per query
        window = (keys >= start[:, None]) & (keys <= positions[:, None])  # (Tq, Tk)
        n_cand = (start + bs - 1) // bs  # candidate blocks: jB < s
        hi = int(n_cand[-1])
        if hi == 0 or self.top_k == 0:
            return window.expand(q.shape[0], q.shape[1], -1, -1)
        prefix = blocked(k.detach(), bs).cumsum(2)
        means = prefix[:, :hi, -1] / bs
        prefix = prefix.view(prefix.shape[0], -1, prefix.shape[-1])
        flat_q = q.detach().reshape(-1, q_len, q.shape[-1])
        scores = flat_q @ means.transpose(1, 2)  # (rows, Tq, hi)
        last = (n_cand - 1).clamp(min=0)  # the last candidate: scored by its pre-window keys
        cut_mean = prefix[:, (start - 1).clamp(min=0)] / (start - last * bs).clamp(min=1)[:, None]
        cut_score = (flat_q * cut_mean).sum(-1, keepdim=True)
        scores.scatter_(2, last.view(1, -1, 1).expand(scores.shape[0], -1, 1), cut_score)
        late = torch.arange(hi, device=q.device) >= n_cand[:, None]
        scores.masked_fill_(late, float("-inf"))
        chosen = torch.zeros_like(scores, dtype=torch.bool)
        chosen.scatter_(2, scores.topk(min(self.top_k, hi), dim=-1).indices, True)
        chosen &= ~late
        span = min(hi * bs, k_len)
        blocks = chosen.unsqueeze(-1).expand(-1, -1, -1, bs).reshape(*chosen.shape[:2], -1)
        blocks = blocks[..., :span] & (keys[:span] < start[:, None])
        mask = window.expand(blocks.shape[0], -1, -1).clone()
        mask[..., :span] |= blocks
        return mask.view(*q.shape[:2], q_len, k_len)

    def route(self, q, prefix, means, positions):
        """The top-k candidate blocks of each query: (rows, C, D) -> block ids (rows, C, k')."""
        bs, rows = self.block_size, q.shape[0]
        start = (positions - self.window + 1).clamp(min=0)  # window start s
        n_cand = (start + bs - 1) // bs  # candidates: the blocks with jB < s
        lo, hi = int(n_cand[0]), int(n_cand[-1])
        if hi == 0 or self.top_k == 0:
            return torch.empty(rows, q.shape[1], 0, dtype=torch.long, device=q.device)
        scores = q @ means[:, :hi].transpose(1, 2)  # (rows, C, hi)
        last = (n_cand - 1).clamp(min=0)  # the block the window may cut: its pre-window keys
        cut_mean = prefix[:, (start - 1).clamp(min=0)] / (start - last * bs).clamp(min=1)[:, None]
        cut_score = (q * cut_mean).sum(-1, keepdim=True)  # (rows, C, 1)
        scores.scatter_(2, last.view(1, -1, 1).expand(rows, -1, 1), cut_score)
        if lo < hi:
            late = torch.arange(lo, hi, device=q.device) >= n_cand[:, None]  # (C, hi - lo)
            scores[..., lo:].masked_fill_(late, float("-inf"))
        return scores.topk(min(self.top_k, hi), dim=-1).indices

    def attend(self, q, k_blocks, v_blocks, blocks, positions):
        """One softmax over each query's window keys and its chosen blocks' keys."""
        rows, n, dim = q.shape
        bs, w = self.block_size, self.window
        scale = 1.0 / math.sqrt(dim)
        start = (positions - w + 1).clamp(min=0)
        n_blocks, width = k_blocks.shape[1], blocks.shape[-1] * bs
        flat = (blocks + n_blocks * torch.arange(rows, device=q.device)[:, None, None]).view(-1)
        block_k = k_blocks.view(rows * n_blocks, -1).index_select(0, flat).view(rows, n, width,
                                                                                dim)
        block_pos = (blocks[..., None] * bs + torch.arange(bs, device=q.device)).view(rows, n,
                                                                                     width)
        block_scores = (q.unsqueeze(2) @ block_k.transpose(2, 3)).squeeze(2)  # (rows, C, k'B)
        block_scores = block_scores.masked_fill(block_pos >= start[:, None], float("-inf"))
        first = int(positions[0]) - w + 1
        lo, hi = max(first, 0), int(positions[-1]) + 1
        win_k = windows(k_blocks.view(rows, -1, dim)[:, lo:hi], lo - first, w)
        win_v = windows(v_blocks.view(rows, -1, dim)[:, lo:hi], lo - first, w)
        win_scores = (q.unsqueeze(2) @ win_k.transpose(2, 3)).squeeze(2)  # (rows, C, w)
        win_pos = positions[:, None] - w + 1 + torch.arange(w, device=q.device)  # (C, w)
        win_scores = win_scores.masked_fill(win_pos < 0, float("-inf"))
        scores = torch.cat((block_scores, win_scores), dim=2) * scale
        probs = scores.float().softmax(-1).to(q.dtype)
        out = (probs[..., None, width:] @ win_v).squeeze(2)  # (rows, C, D)
        if width:
            # reshape, not tinylm's view: v straight from a transpose (no cache) is not
            # viewable this way; where tinylm's view works, reshape is that same view
            block_v = v_blocks.reshape(rows * n_blocks, -1).index_select(0, flat)
            out = out + (probs[..., None, :width] @ block_v.view(rows, n, width, dim)).squeeze(2)
        return out


def blocked(x, bs: int):
    """(B, H, T, D) -> (B*H, ceil(T/bs), bs, D), the last block zero-padded."""
    batch, heads, length, dim = x.shape
    x = x.reshape(batch * heads, length, dim)
    pad = -length % bs
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.view(batch * heads, -1, bs, dim)


def windows(keys, pad: int, w: int):
    """Left-pad keys (rows, L, D) by `pad` zero rows; view each run of w rows."""
    return F.pad(keys, (0, 0, pad, 0)).unfold(1, w, 1).transpose(2, 3)
