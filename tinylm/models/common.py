"""Layers shared by every tinylm model family: RMSNorm, RoPE, SwiGLU, causal attention, KV cache.

A layer lives here only once two families use it. The conventions match the
Llama family as Hugging Face `transformers` writes it (RoPE rotates the two *halves* of each head,
not interleaved pairs), so a tinylm model exports to `LlamaForCausalLM` by renaming and splitting
tensors, with no permutation of rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# %% export (copied into the single-file export; see export/single_file.py)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019) with a learned gain, no bias."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


# --------------------------------------------------------------------------- RoPE

def rope_tables(head_dim: int, length: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (length, head_dim // 2) for rotary embeddings (Su et al. 2021).

    Computed in float64 and stored as float32: with bases as large as 1e7 (Blink) the float32
    product position * inv_freq loses digits that float64 keeps.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, D) by position; cos/sin are (T, D/2). Half-split layout, as HF Llama."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def rope_rows(cos: torch.Tensor, sin: torch.Tensor, pos, length: int):
    """The table rows for positions [pos, pos+length). `pos` is an int shared by the batch, or
    a (B,) tensor of per-row positions for one token each (a server's batch of requests of
    different lengths); then the rows come as (B, 1, 1, D/2), broadcasting over heads."""
    if not torch.is_tensor(pos):
        return cos[pos:pos + length], sin[pos:pos + length]
    if length != 1:
        raise ValueError(f"per-row positions take one token per row, got {length}")
    return cos[pos][:, None, None], sin[pos][:, None, None]


def positions_end(pos, length: int) -> int:
    """One past the last position written: pos + length, for an int or per-row positions."""
    return (int(pos.max()) if torch.is_tensor(pos) else pos) + length


# --------------------------------------------------------------------------- MLP

class SwiGLU(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020). Gate and up projections are one fused matmul:
    rows [0, hidden) of `w13` are the gate, rows [hidden, 2*hidden) the up projection."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


# --------------------------------------------------------------------------- KV cache

class KVCache:
    """Pre-allocated keys and values for every layer: (layers, B, kv_heads, max_len, head_dim).

    Pre-allocating once and writing in place keeps each decoding step free of allocations,
    which is most of what a tiny model's step costs on a CPU.
    """

    def __init__(self, n_layers, batch, n_kv_heads, max_len, head_dim, device, dtype):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len

    def update(self, layer: int, pos, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, kv_heads, T, D) at positions [pos, pos+T); return all keys so far.

        With per-row positions (a (B,) tensor, T = 1) row b writes at pos[b] and the keys come
        back up to the furthest row; `causal_sdpa` masks each row's keys past its own pos."""
        end = positions_end(pos, k.shape[2])
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked for {end}")
        if torch.is_tensor(pos):
            rows = torch.arange(k.shape[0], device=k.device)
            self.k[layer, rows, :, pos] = k[:, :, 0]  # (B, kv_heads, D) at (row, pos[row])
            self.v[layer, rows, :, pos] = v[:, :, 0]
        else:
            self.k[layer, :, :, pos:end] = k
            self.v[layer, :, :, pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


# --------------------------------------------------------------------------- attention

class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with grouped-query heads (Ainslie et al. 2023) and RoPE.

    q, k and v come from one fused projection `wqkv` whose output rows are laid out as
    [n_heads * head_dim query rows | n_kv_heads * head_dim key rows | n_kv_heads * head_dim
    value rows]. `attention_fn`, when set, replaces dense SDPA (block-sparse attention plugs in
    here); it receives q, k, v with the same head count and must be causal.
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.wqkv = nn.Linear(dim, (n_heads + 2 * n_kv_heads) * head_dim, bias=False)
        self.wo = nn.Linear(n_heads * head_dim, dim, bias=False)
        self.attention_fn = None

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotary position embedding of q or k (B, H, T, D); a subclass may rotate otherwise."""
        return apply_rope(x, cos, sin)

    def forward(self, x, cos, sin, cache: KVCache | None = None, layer: int = 0, pos: int = 0):
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
        if self.attention_fn is not None:
            out = self.attention_fn(q, k, v, pos)
        else:
            out = causal_sdpa(q, k, v, pos)
        out = out.transpose(1, 2).reshape(batch, length, q_size)
        return self.wo(out)


def causal_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos) -> torch.Tensor:
    """Dense causal attention where the T queries sit at positions [pos, pos+T) of the keys;
    with per-row positions (a (B,) tensor, T = 1) row b's query sees keys [0, pos[b]]."""
    q_len, k_len = q.shape[2], k.shape[2]
    if torch.is_tensor(pos):
        seen = torch.arange(k_len, device=q.device)[None] <= pos[:, None]  # (B, k_len)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=seen[:, None, None])
    if q_len == k_len:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if q_len == 1:  # one new token sees every cached key: no mask needed
        return F.scaled_dot_product_attention(q, k, v)
    # a chunk after a cached prefix: query i may see keys [0, pos + i]
    mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(diagonal=pos)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def init_linear_(module: nn.Module, std: float) -> None:
    nn.init.normal_(module.weight, mean=0.0, std=std)


def residual_std(init_std: float, n_residual_layers: int) -> float:
    """Output projections into the residual stream get std / sqrt(2 L), as GPT-2 does, so the
    stream's variance does not grow with depth."""
    return init_std / math.sqrt(2 * max(1, n_residual_layers))
# %% end export
