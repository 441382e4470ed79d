"""Exported part: the `llama` family's config and forward pass (cf. `tinylm.models.llama`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tinylm.export.standalone.layers import Block, KVCache, RMSNorm, rope_tables

# %% export


@dataclass
class ModelConfig:
    """The checkpoint's `model_config` (tinylm's LlamaConfig; init_std is unused here)."""

    vocab_size: int = 500
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4
    ffn_hidden: int = 384
    context_len: int = 256
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02
    think_steps: int = 0  # continuous-thought passes: the normed output is fed back as input

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


class Model(nn.Module):
    """Llama-style decoder: embedding, pre-norm blocks, final RMSNorm, (tied) head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        # how much of each thought enters the next pass
        self.think_gate = nn.Parameter(torch.zeros(c.think_steps)) if c.think_steps else None
        self.lm_head = None if c.tie_embeddings else nn.Linear(c.dim, c.vocab_size, bias=False)
        cos, sin = rope_tables(c.head_dim, c.context_len, c.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)  # (context, head_dim/2)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, idx, cache=None, pos: int = 0):
        """idx (B, T) at positions [pos, pos+T) -> logits (B, T, vocab)."""
        length = idx.shape[1]
        if pos + length > self.config.context_len:
            raise ValueError(f"positions up to {pos + length} exceed the context length "
                             f"{self.config.context_len}")
        cos, sin = self.rope_cos[pos:pos + length], self.rope_sin[pos:pos + length]
        x = tokens = self.tok_emb(idx)  # (B, T, dim)
        for step in range(self.config.think_steps + 1):
            if step:  # a continuous thought: the normed last hidden state, gated, beside the tokens
                x = tokens + self.think_gate[step - 1] * self.norm(x)
            for i, block in enumerate(self.layers):
                x = block(x, cos, sin, cache, step * len(self.layers) + i, pos)
        x = self.norm(x)
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return x @ weight.t()  # (B, T, vocab)

    def new_cache(self, batch: int, max_len: int):
        c, weight = self.config, self.tok_emb.weight
        layers = c.n_layers * (c.think_steps + 1)  # a slot per layer and thinking pass
        return KVCache(layers, batch, c.n_kv_heads, max_len, c.head_dim, weight.device,
                       weight.dtype)
