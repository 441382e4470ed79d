"""Llama-style decoder: the `llama` family (Glint-1.3 and kin).

Built from the Glint-1.3 model card (CompactAI, 2026): a plain Llama decoder of ~1M parameters,
"no gimmicks". Notable choices:
- pre-norm blocks with RMSNorm, RoPE (base configurable), SwiGLU, grouped-query attention;
- tied input/output embeddings by default (the card's choice; untied is a setting);
- attention through `torch.nn.functional.scaled_dot_product_attention`;
- a pre-allocated KV cache for generation (see `common.KVCache`);
- GPT-2 style init: N(0, 0.02), residual projections scaled by 1/sqrt(2L).

The card states 982,656 parameters for this shape; a tied model of the stated shape has
917,120 (see `tinylm info glint-1.3`). The card's figure equals ours plus an untied 512 x 128
output head, which suggests the released weights padded and untied the head. We follow the
card's stated *shape* (tied, vocab 500).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tinylm.models.common import (CausalSelfAttention, KVCache, RMSNorm, SwiGLU, init_linear_,
                                  residual_std, rope_tables)


@dataclass
class LlamaConfig:
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

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden",
                     "context_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads "
                             f"{self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.rope_base <= 1:
            raise ValueError(f"rope_base must be > 1, got {self.rope_base}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = CausalSelfAttention(config.dim, config.n_heads, config.n_kv_heads,
                                        config.head_dim)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config.dim, config.ffn_hidden)

    def forward(self, x, cos, sin, cache=None, layer=0, pos=0):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer, pos)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    family = "llama"

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.dim, config.vocab_size,
                                                                     bias=False)
        cos, sin = rope_tables(config.head_dim, config.context_len, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)  # (context, head_dim/2)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        std = self.config.init_std
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=std)
        for block in self.layers:
            init_linear_(block.attn.wqkv, std)
            init_linear_(block.mlp.w13, std)
            init_linear_(block.attn.wo, residual_std(std, self.config.n_layers))
            init_linear_(block.mlp.w2, residual_std(std, self.config.n_layers))
        if self.lm_head is not None:
            init_linear_(self.lm_head, std)

    # ------------------------------------------------------------------ forward

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, pos: int = 0,
                return_hidden: bool = False):
        """idx (B, T) token ids at positions [pos, pos+T) -> logits (B, T, vocab).

        With `return_hidden`, the final normed hidden states (B, T, dim) are returned instead,
        for callers (the trainer's chunked loss) that apply the head themselves.
        """
        length = idx.shape[1]
        if pos + length > self.config.context_len:
            raise ValueError(f"positions up to {pos + length} exceed the context length "
                             f"{self.config.context_len}")
        cos, sin = self.rope_cos[pos:pos + length], self.rope_sin[pos:pos + length]
        x = self.tok_emb(idx)  # (B, T, dim)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, cache, i, pos)
        x = self.norm(x)
        return x if return_hidden else self.head(x)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return hidden @ weight.t()  # (B, T, vocab)

    def new_cache(self, batch: int, max_len: int | None = None, device=None, dtype=None):
        c = self.config
        return KVCache(c.n_layers, batch, c.n_kv_heads, max_len or c.context_len, c.head_dim,
                       device or self.tok_emb.weight.device, dtype or self.tok_emb.weight.dtype)

    # ------------------------------------------------------------------ introspection

    @staticmethod
    def parameter_group(name: str) -> str:
        """Which merge/optimizer group a parameter belongs to (used for per-group SLERP t)."""
        if name.startswith(("tok_emb", "lm_head")):
            return "embeddings"
        if "norm" in name:
            return "norms"
        if ".attn." in name:
            return "attention"
        if ".mlp." in name:
            return "mlp"
        return "other"

    def parameter_breakdown(self) -> dict[str, int]:
        """Exact parameter count per part, in the order a reader meets them."""
        parts: dict[str, int] = {}
        for name, p in self.named_parameters():
            key = name if not name.startswith("layers.") else "layers.*." + name.split(".", 2)[2]
            parts[key] = parts.get(key, 0) + p.numel()
        return parts
