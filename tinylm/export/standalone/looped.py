"""Exported part: the `looped` family's config and forward pass (cf. `tinylm.models.looped`).

One shared block applied `loops` times, each time after adding that loop's embedding and with
that loop's LoRA delta on the chosen projections; optional unique prelude and coda blocks, a
factorized embedding, partial RoPE for odd head dims, continuous-thought passes and
block-sparse attention, all as tinylm computes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.export.standalone.layers import (
    Attention,
    Block,
    KVCache,
    RMSNorm,
    rope_tables,
)
from tinylm.export.standalone.sparse_attention import BlockSparse

# %% export


@dataclass
class ModelConfig:
    """The checkpoint's `model_config` (tinylm's LoopedConfig; init_std is unused here)."""

    vocab_size: int = 257
    dim: int = 64
    n_heads: int = 4
    n_kv_heads: int = 4
    ffn_hidden: int = 192
    context_len: int = 256
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02
    emb_dim: int = 0  # factorized embedding width (vocab -> emb_dim -> dim); 0 = none
    n_prelude: int = 0  # unique blocks before the loop
    n_coda: int = 0  # unique blocks after it
    loops: int = 2  # applications of the shared block
    max_loops: int = 8  # loop embeddings and LoRA adapters held
    lora_rank: int = 2
    lora_targets: tuple = ("wqkv",)  # shared-block projections with per-loop LoRA
    think_steps: int = 0  # continuous-thought passes
    sparse_attention: dict | None = None  # block_size, top_k, window; None = dense

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


class LoopLoRALinear(nn.Linear):
    """A bias-free linear layer plus one rank-r delta per loop; `loop` picks the active one
    (None: the shared weight alone)."""

    def __init__(self, in_features: int, out_features: int, rank: int, n_loops: int):
        super().__init__(in_features, out_features, bias=False)
        self.lora_A = nn.Parameter(torch.zeros(n_loops, rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(n_loops, out_features, rank))
        self.loop = None

    def forward(self, x):
        if self.loop is None:
            return F.linear(x, self.weight)
        a, b = self.lora_A[self.loop], self.lora_B[self.loop]  # (r, in), (out, r)
        tokens = x.numel() // self.in_features
        if tokens * (self.in_features + self.out_features) > self.in_features * self.out_features:
            return F.linear(x, self.weight + b @ a)  # many tokens: merge the delta once
        return F.linear(x, self.weight) + F.linear(F.linear(x, a), b)


class PartialRotaryAttention(Attention):
    """For an odd head_dim: RoPE as x * C + (x @ J) * S over full-width tables, which rotate
    the first 2 * (head_dim // 2) dims of each head and pass the last through."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int):
        super().__init__(dim, n_heads, n_kv_heads, head_dim)
        half = head_dim // 2
        j = torch.zeros(head_dim, head_dim)  # x @ J = [-x2, x1, 0]
        j[torch.arange(half) + half, torch.arange(half)] = -1.0
        j[torch.arange(half), torch.arange(half) + half] = 1.0
        self.register_buffer("rotate_half", j, persistent=False)

    def rope(self, x, table_c, table_s):
        return x * table_c.to(x.dtype) + (x @ self.rotate_half.to(x.dtype)) * table_s.to(x.dtype)


def partial_rope_tables(head_dim: int, length: int, base: float):
    """Full-width (length, head_dim) tables for PartialRotaryAttention."""
    cos, sin = rope_tables(2 * (head_dim // 2), length, base)
    rest = head_dim - 2 * cos.shape[1]
    return (torch.cat((cos, cos, torch.ones(length, rest)), dim=1),
            torch.cat((sin, sin, torch.zeros(length, rest)), dim=1))


def make_block(c: ModelConfig) -> Block:
    block = Block(c)
    if c.head_dim % 2:
        block.attn = PartialRotaryAttention(c.dim, c.n_heads, c.n_kv_heads, c.head_dim)
    return block


class Model(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.emb_dim or c.dim)
        self.emb_proj = nn.Linear(c.emb_dim, c.dim, bias=False) if c.emb_dim else None
        self.prelude = nn.ModuleList(make_block(c) for _ in range(c.n_prelude))
        self.shared = make_block(c)
        self.adapters = []
        if c.lora_rank and c.lora_targets:  # swap the targets for per-loop LoRA layers
            for parent in (self.shared.attn, self.shared.mlp):
                for name in ("wqkv", "wo", "w13", "w2"):
                    if name in c.lora_targets and hasattr(parent, name):
                        base = getattr(parent, name)
                        layer = LoopLoRALinear(base.in_features, base.out_features,
                                               c.lora_rank, c.max_loops)
                        setattr(parent, name, layer)
                        self.adapters.append(layer)
        self.loop_emb = nn.Embedding(c.max_loops, c.dim)
        self.coda = nn.ModuleList(make_block(c) for _ in range(c.n_coda))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        # how much of each thought enters the next pass
        self.think_gate = nn.Parameter(torch.zeros(c.think_steps)) if c.think_steps else None
        self.lm_head = None if c.tie_embeddings else nn.Linear(c.dim, c.vocab_size, bias=False)
        tables = partial_rope_tables if c.head_dim % 2 else rope_tables
        cos, sin = tables(c.head_dim, c.context_len, c.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.loops = c.loops  # may be set to any count in [1, max_loops] before generating
        if c.sparse_attention is not None:
            sparse = BlockSparse(**c.sparse_attention)
            for module in self.modules():
                if isinstance(module, Attention):
                    module.attention_fn = sparse

    def forward(self, idx, cache=None, pos: int = 0):
        """idx (B, T) at positions [pos, pos+T) -> logits (B, T, vocab)."""
        c, length = self.config, idx.shape[1]
        if not 1 <= self.loops <= c.max_loops:
            raise ValueError(f"loops must be in [1, {c.max_loops}], got {self.loops}")
        if pos + length > c.context_len:
            raise ValueError(f"positions up to {pos + length} exceed the context length "
                             f"{c.context_len}")
        per_pass = c.n_prelude + self.loops + c.n_coda
        cos, sin = self.rope_cos[pos:pos + length], self.rope_sin[pos:pos + length]
        x = self.tok_emb(idx)  # (B, T, emb_dim or dim)
        if self.emb_proj is not None:
            x = self.emb_proj(x)
        tokens = x
        for step in range(c.think_steps + 1):
            if step:  # a continuous thought: the normed last hidden state, gated, beside the tokens
                x = tokens + self.think_gate[step - 1] * self.norm(x)
            x = self.trunk(x, cos, sin, cache, step * per_pass, pos)
        x = self.norm(x)
        if self.lm_head is not None:
            return self.lm_head(x)
        if self.emb_proj is not None:  # tied through the factorization
            x = x @ self.emb_proj.weight  # (B, T, emb_dim)
        return x @ self.tok_emb.weight.t()  # (B, T, vocab)

    def trunk(self, x, cos, sin, cache, layer: int, pos: int):
        """Prelude, the shared block `loops` times, coda; KV cache slots from `layer` on."""
        for block in self.prelude:
            x = block(x, cos, sin, cache, layer, pos)
            layer += 1
        for i in range(self.loops):
            x = x + self.loop_emb.weight[i]
            for adapter in self.adapters:
                adapter.loop = i
            x = self.shared(x, cos, sin, cache, layer, pos)
            layer += 1
        for adapter in self.adapters:
            adapter.loop = None
        for block in self.coda:
            x = block(x, cos, sin, cache, layer, pos)
            layer += 1
        return x

    def new_cache(self, batch: int, max_len: int):
        c, weight = self.config, self.tok_emb.weight
        layers = (c.n_prelude + self.loops + c.n_coda) * (c.think_steps + 1)
        return KVCache(layers, batch, c.n_kv_heads, max_len, c.head_dim, weight.device,
                       weight.dtype)
