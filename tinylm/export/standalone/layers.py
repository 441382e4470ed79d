"""Exported part: the layers every family's forward pass uses (cf. `tinylm.models.common`).

A compact restatement of tinylm's RMSNorm, RoPE, SwiGLU, KV cache and causal attention, with
the training-only parts (initialisation, the `attention_fn` hook) left out. The arithmetic is
the same call for call; see the package docstring for why that matters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# %% export


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(head_dim: int, length: int, base: float):
    """cos, sin (length, head_dim // 2); float64 angles, stored as float32 (as tinylm)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x, cos, sin):
    """Rotate the two halves of each head of x (B, H, T, D); cos, sin (T, D/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class SwiGLU(nn.Module):
    """w13 holds the gate rows, then the up rows."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class KVCache:
    """Keys and values of every layer, pre-allocated: (layers, B, kv_heads, max_len, D)."""

    def __init__(self, n_layers, batch, n_kv_heads, max_len, head_dim, device, dtype):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len

    def update(self, layer: int, pos: int, k, v):
        end = pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked for {end}")
        self.k[layer, :, :, pos:end] = k
        self.v[layer, :, :, pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


def causal_sdpa(q, k, v, pos: int):
    """Causal attention of T queries at positions [pos, pos+T) over all keys so far."""
    q_len, k_len = q.shape[2], k.shape[2]
    if q_len == k_len:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if q_len == 1:
        return F.scaled_dot_product_attention(q, k, v)
    mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(diagonal=pos)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Grouped-query attention with RoPE; wqkv rows are [q | k | v]. `attention_fn`, when set,
    replaces dense causal attention (the looped family's block-sparse attention)."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.wqkv = nn.Linear(dim, (n_heads + 2 * n_kv_heads) * head_dim, bias=False)
        self.wo = nn.Linear(n_heads * head_dim, dim, bias=False)
        self.attention_fn = None

    def rope(self, x, cos, sin):
        return apply_rope(x, cos, sin)

    def forward(self, x, cos, sin, cache=None, layer: int = 0, pos: int = 0):
        batch, length, _ = x.shape
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = self.wqkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, pos, k, v)  # (B, Hkv, pos+T, D)
        if self.n_kv_heads != self.n_heads:
            repeat = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = (self.attention_fn or causal_sdpa)(q, k, v, pos)  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(batch, length, q_size)
        return self.wo(out)


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, c):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = Attention(c.dim, c.n_heads, c.n_kv_heads, c.head_dim)
        self.mlp_norm = RMSNorm(c.dim, c.norm_eps)
        self.mlp = SwiGLU(c.dim, c.ffn_hidden)

    def forward(self, x, cos, sin, cache=None, layer: int = 0, pos: int = 0):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer, pos)
        return x + self.mlp(self.mlp_norm(x))
