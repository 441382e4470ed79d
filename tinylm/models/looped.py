"""Looped (depth-recurrent) decoder: the `looped` family (Blink-1, Shard, and kin).

Built from the Blink-1 model card and the Glint Research blog (2026): depth comes from applying
one shared transformer block several times, not from a stack of unique layers.

    tokens -> embedding [-> emb_proj]            (factorized embedding, ALBERT-style, optional)
           -> prelude blocks                      (unique, n_prelude of them)
           -> for i in range(loops):              (ONE shared block, applied `loops` times)
                  x = x + loop_emb[i]             (learned per-loop embedding)
                  x = shared_block_i(x)           (shared weights + loop i's LoRA delta)
           -> coda blocks                         (unique, n_coda of them)
           -> RMSNorm -> tied head                (through the same factorization)

Notable choices:
- Blocks are llama's `Block` (pre-norm RMSNorm, RoPE attention, SwiGLU); the shared one gets
  per-loop LoRA by composition (`lora.add_loop_lora`), so no layer code is copied here.
- `loops` is the training loop count; `max_loops` is how many loop embeddings and LoRA adapters
  exist. Inference may run any count in [1, max_loops] (`set_loops(n)` or `forward(loops=n)`):
  the card samples Blink with 8 loops although it trained at 2. Loop embeddings start at zero
  and LoRA B at zero, so an untrained extra loop is the plain shared block.
- The KV cache has one slot per block *application*: n_prelude + loops + n_coda per pass.
- Odd head_dim (Blink: dim 3, one head) uses partial rotary: the first 2*(head_dim // 2) dims of
  each head rotate, the rest pass through, as GPT-NeoX's rotary_pct does. Even head_dim is
  exactly llama's RoPE. (With one rotated pair, as in Blink, the RoPE base has no effect: the
  only frequency is base^0, one radian per position. We keep the card's 1e7 anyway.)
- Optional block-sparse attention (`sparse_attention`, Blink's card: block 32, top-2, window
  16) through `sparse_attention.enable_block_sparse`.
- Continuous thinking (`think_steps`, COCONUT, Hao et al. 2024): see "thinking" below.

Continuous thinking. With think_steps = k the forward pass runs the whole network k + 1 times
over the same positions. Pass 0 reads the token embeddings e; pass j + 1 reads, at position t,

    e[t] + think_gate[j] * h_j[t],   h_j = the last hidden state of pass j (after the final
                                     norm, as COCONUT feeds GPT-2's last hidden state back),

and the logits come from the last pass. Every pass is causal and pass j + 1 at t reads pass j
only at t, so the whole is causal and all positions train in parallel with the ordinary
next-token loss; there is no thinking loss. Generation keeps a KV cache slot per pass and block
application, so a new token costs k + 1 passes but no recomputation.

Why the same positions, not COCONUT's appended latent positions: COCONUT inserts thoughts at a
<bot> marker of a reasoning data set; plain pretraining has no marker, and thoughts after every
token would multiply the sequence by k + 1 and need a custom mask, for the same (k + 1)x compute
this spends. Why the token embedding stays and the thought is gated (k scalars, zero at init):
in COCONUT a thought sits *beside* the tokens, which stay in the sequence; replacing a
position's input by the thought drops the token from every later pass. We tried that first (the
input of pass j + 1 is h_j alone): on `looped-1m` with 8 loops and k = 4 it trained to a 48%
*higher* validation loss than k = 0 (4.92 against 3.32 nats/token after 200 steps of 8 x 256
tokens, benchmarks/bench_thinking.py), stuck near the unigram loss. With the gate at zero a
fresh thinking model computes exactly the plain model's function, as a fresh LoRA does, and
training opens the gate only as far as the thoughts help.

Blink-1, `tinylm info blink-1`: 1,086 parameters. The card says 1,087; exactly 1,087 cannot be
built from the parts it describes. Each of them has a dimension that is a multiple of 3 (dim 3,
qkv 9, SwiGLU 2 x 6), so each size is a multiple of 3, but 1,087 = 3 x 362 + 1: the card's model
holds at least one tensor it does not describe (a single learned scalar would do), and we do not
invent it.

    tok_emb.weight            257 x 3   771   byte embedding, tied: also the output head
    shared.attn_norm.weight         3     3   RMSNorm gain before attention
    shared.attn.wqkv.weight     9 x 3    27   fused q, k, v (1 head, head_dim 3)
    shared.attn.wqkv.lora_A  8 x 2 x 3   48   rank-2 LoRA A, one per loop (8 = max_loops)
    shared.attn.wqkv.lora_B  8 x 9 x 2  144   rank-2 LoRA B, one per loop
    shared.attn.wo.weight       3 x 3     9   attention output
    shared.mlp_norm.weight          3     3   RMSNorm gain before the MLP
    shared.mlp.w13.weight      12 x 3    36   SwiGLU gate + up (hidden 6)
    shared.mlp.w2.weight        3 x 6    18   SwiGLU down
    loop_emb.weight             8 x 3    24   per-loop embedding
    norm.weight                     3     3   final RMSNorm
                                      -----
                                      1,086

Where the LoRA goes was worked out from the count: 1,086 - 771 - 96 (block) - 24 - 3 = 192 LoRA
parameters, and rank-2 adapters cost 24 (wqkv), 12 (wo), 30 (w13) or 18 (w2) each. 192 is 8
adapters on wqkv (one per loop embedding, so all 8 inference loops have one); no subset of
targets fits 2 trained loops (96 each). LoRA on q and v only, the LoRA paper's choice, would
also cost 24 per loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from tinylm.models.common import (CausalSelfAttention, KVCache, RMSNorm, init_linear_,
                                  positions_end, residual_std, rope_rows, rope_tables)
from tinylm.models.llama import Block, Llama
from tinylm.models.family import ExportSpec, Family, HFAdapter, Preset
from tinylm.models.llama import fused_splits
from tinylm.models.lora import LoopLoRALinear, add_loop_lora, set_active_loop
from tinylm.models.sparse_attention import BlockSparseConfig, enable_block_sparse

# %% export (copied into the single-file export; see export/single_file.py)

LORA_TARGETS = ("wqkv", "wo", "w13", "w2")


@dataclass
class LoopedConfig:
    vocab_size: int = 257
    dim: int = 64
    n_heads: int = 4
    n_kv_heads: int = 4
    ffn_hidden: int = 192
    context_len: int = 256
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    """Output head = input embedding (through the factorization); untied: a dim x vocab head."""
    init_std: float = 0.02
    emb_dim: int = 0
    """Factorized embedding width (vocab -> emb_dim -> dim, ALBERT); 0 = no factorization."""
    n_prelude: int = 0
    """Unique blocks before the loop."""
    n_coda: int = 0
    """Unique blocks after the loop."""
    loops: int = 2
    """Applications of the shared block in training (and by default at inference)."""
    max_loops: int = 8
    """Loop embeddings and LoRA adapters held: the most loops inference can run."""
    lora_rank: int = 2
    """Rank of each per-loop LoRA adapter; 0 = no adapters."""
    lora_targets: list[str] = field(default_factory=lambda: ["wqkv"])
    """Shared-block projections that get per-loop adapters, among wqkv, wo, w13, w2."""
    think_steps: int = 0
    """Continuous-thought passes, each fed back beside the token embeddings (COCONUT)."""
    sparse_attention: dict | None = None
    """BlockSparseConfig fields (block_size, top_k, window); None = dense attention."""

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_heads", "n_kv_heads", "ffn_hidden", "context_len",
                     "loops", "max_loops"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("emb_dim", "n_prelude", "n_coda", "lora_rank", "think_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads "
                             f"{self.n_kv_heads}")
        if self.loops > self.max_loops:
            raise ValueError(f"loops {self.loops} exceeds max_loops {self.max_loops}")
        if self.rope_base <= 1:
            raise ValueError(f"rope_base must be > 1, got {self.rope_base}")
        self.lora_targets = list(self.lora_targets)
        unknown = sorted(set(self.lora_targets) - set(LORA_TARGETS))
        if unknown:
            raise ValueError(f"unknown lora_targets {unknown}; choose among {list(LORA_TARGETS)}")
        if self.sparse_attention is not None:
            if not isinstance(self.sparse_attention, dict):
                raise ValueError(f"sparse_attention must be a dict of BlockSparseConfig fields "
                                 f"or null, got {self.sparse_attention!r}")
            BlockSparseConfig(**self.sparse_attention)  # a bad field fails here, with a message

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


# --------------------------------------------------------------------------- partial rotary

def partial_rope_tables(head_dim: int, length: int, base: float):
    """(length, head_dim) tables C, S with rope(x) = x * C + (x @ J) * S (see
    `PartialRotaryAttention`): the first 2 * (head_dim // 2) dims of C hold llama's cos table
    twice (half-split layout) and of S its sin table; the odd last dim gets C = 1, S = 0, so it
    passes through unrotated, as GPT-NeoX's partial rotary does."""
    cos, sin = rope_tables(2 * (head_dim // 2), length, base)  # (length, head_dim // 2)
    rest = head_dim - 2 * cos.shape[1]
    table_c = torch.cat((cos, cos, torch.ones(length, rest)), dim=1)
    table_s = torch.cat((sin, sin, torch.zeros(length, rest)), dim=1)
    return table_c, table_s


def rotate_half_matrix(head_dim: int) -> torch.Tensor:
    """J (head_dim, head_dim) with x @ J = [-x2, x1, 0]: rotate-half on the rotary dims, zero
    on the pass-through dim."""
    half = head_dim // 2
    j = torch.zeros(head_dim, head_dim)
    j[torch.arange(half) + half, torch.arange(half)] = -1.0
    j[torch.arange(half), torch.arange(half) + half] = 1.0
    return j


class PartialRotaryAttention(CausalSelfAttention):
    """`CausalSelfAttention` for an odd head_dim (Blink's is 3): RoPE rotates the first
    2 * (head_dim // 2) dims of each head and passes the last one through.

    Here `cos`/`sin` are the full-width tables of `partial_rope_tables`, and RoPE is
    x * C + (x @ J) * S: one tiny matmul and three elementwise ops, about twice as fast as
    slicing the head into 1-wide halves (at head_dim 3 such per-op costs are most of a step).
    Only `rope` differs from the parent.
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int):
        super().__init__(dim, n_heads, n_kv_heads, head_dim)
        self.register_buffer("rotate_half", rotate_half_matrix(head_dim), persistent=False)

    def rope(self, x: torch.Tensor, table_c: torch.Tensor, table_s: torch.Tensor):
        return x * table_c.to(x.dtype) + (x @ self.rotate_half.to(x.dtype)) * table_s.to(x.dtype)


def make_block(config: LoopedConfig) -> Block:
    """llama's Block, with partial-rotary attention when head_dim is odd."""
    block = Block(config)  # Block reads dim, heads, head_dim, ffn_hidden and norm_eps only
    if config.head_dim % 2:
        block.attn = PartialRotaryAttention(config.dim, config.n_heads, config.n_kv_heads,
                                            config.head_dim)
    return block


# --------------------------------------------------------------------------- model

class Looped(nn.Module):
    family = "looped"

    def __init__(self, config: LoopedConfig):
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.emb_dim or c.dim)
        self.emb_proj = nn.Linear(c.emb_dim, c.dim, bias=False) if c.emb_dim else None
        self.prelude = nn.ModuleList(make_block(c) for _ in range(c.n_prelude))
        self.shared = make_block(c)
        self.adapters: list[LoopLoRALinear] = (
            add_loop_lora(self.shared, c.lora_targets, c.lora_rank, c.max_loops)
            if c.lora_rank and c.lora_targets else [])
        self.loop_emb = nn.Embedding(c.max_loops, c.dim)
        self.coda = nn.ModuleList(make_block(c) for _ in range(c.n_coda))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        # how much of each thought enters the next pass; zero: thinking starts as a no-op
        self.think_gate = nn.Parameter(torch.zeros(c.think_steps)) if c.think_steps else None
        self.lm_head = None if c.tie_embeddings else nn.Linear(c.dim, c.vocab_size, bias=False)
        tables = partial_rope_tables if c.head_dim % 2 else rope_tables
        cos, sin = tables(c.head_dim, c.context_len, c.rope_base)
        # (context, head_dim / 2), or (context, head_dim) for an odd head_dim
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.loops = c.loops
        self.reset_parameters()
        if c.sparse_attention is not None:
            enable_block_sparse(self, BlockSparseConfig(**c.sparse_attention))

    def reset_parameters(self):
        c, std = self.config, self.config.init_std
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=std)
        if self.emb_proj is not None:  # so that proj(emb) has about the std of a plain one
            nn.init.normal_(self.emb_proj.weight, mean=0.0, std=c.emb_dim ** -0.5)
        depth = c.n_prelude + c.loops + c.n_coda  # residual writes per pass, in training
        for block in [*self.prelude, self.shared, *self.coda]:
            init_linear_(block.attn.wqkv, std)
            init_linear_(block.mlp.w13, std)
            init_linear_(block.attn.wo, residual_std(std, depth))
            init_linear_(block.mlp.w2, residual_std(std, depth))
        for layer in self.adapters:
            layer.reset_lora()
        nn.init.zeros_(self.loop_emb.weight)
        if self.think_gate is not None:
            nn.init.zeros_(self.think_gate)
        if self.lm_head is not None:
            init_linear_(self.lm_head, std)

    # ------------------------------------------------------------------ loops

    def set_loops(self, n: int) -> None:
        """Run `n` loops from now on (training used `config.loops`)."""
        self.loops = self._check_loops(n)

    def _check_loops(self, n: int | None) -> int:
        n = self.loops if n is None else int(n)
        if not 1 <= n <= self.config.max_loops:
            raise ValueError(f"loops must be in [1, {self.config.max_loops}] (max_loops: the "
                             f"loop embeddings and adapters this model holds), got {n}")
        return n

    def layers_per_pass(self, loops: int | None = None) -> int:
        """Block applications in one pass: the KV cache slots one thinking pass needs."""
        return self.config.n_prelude + self._check_loops(loops) + self.config.n_coda

    # ------------------------------------------------------------------ forward

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, pos: int = 0,
                loops: int | None = None):
        """idx (B, T) token ids at positions [pos, pos+T) -> logits (B, T, vocab).

        `loops` overrides the loop count for this call.
        """
        n_loops = self._check_loops(loops)
        length = idx.shape[1]
        end = positions_end(pos, length)  # pos: an int, or (B,) per-row positions
        if end > self.config.context_len:
            raise ValueError(f"positions up to {end} exceed the context length "
                             f"{self.config.context_len}")
        per_pass = self.layers_per_pass(n_loops)
        if cache is not None and cache.k.shape[0] != per_pass * (self.config.think_steps + 1):
            raise ValueError(f"this KV cache has {cache.k.shape[0]} layers but the model runs "
                             f"{per_pass * (self.config.think_steps + 1)}; make it with "
                             f"new_cache() after set_loops()")
        cos, sin = rope_rows(self.rope_cos, self.rope_sin, pos, length)
        x = tokens = self.embed(idx)  # (B, T, dim)
        for step in range(self.config.think_steps + 1):
            if step:  # a continuous thought: the last hidden state, fed back beside the token
                x = tokens + self.think_gate[step - 1] * self.norm(x)
            x = self.trunk(x, cos, sin, cache, step * per_pass, pos, n_loops)
        return self.head(self.norm(x))

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx)  # (B, T, emb_dim or dim)
        return x if self.emb_proj is None else self.emb_proj(x)

    def trunk(self, x, cos, sin, cache, first_layer: int, pos: int, n_loops: int):
        """One pass: prelude, the shared block `n_loops` times, coda. KV cache slots
        first_layer, first_layer + 1, ... in that order."""
        layer = first_layer
        for block in self.prelude:
            x = block(x, cos, sin, cache, layer, pos)
            layer += 1
        for i in range(n_loops):
            x = x + self.loop_emb.weight[i]
            set_active_loop(self.adapters, i)
            x = self.shared(x, cos, sin, cache, layer, pos)
            layer += 1
        set_active_loop(self.adapters, None)
        for block in self.coda:
            x = block(x, cos, sin, cache, layer, pos)
            layer += 1
        return x

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.lm_head is not None:
            return self.lm_head(hidden)
        if self.emb_proj is not None:  # tied through the factorization: dim -> emb_dim -> vocab
            hidden = hidden @ self.emb_proj.weight  # (B, T, emb_dim)
        return hidden @ self.tok_emb.weight.t()  # (B, T, vocab)

    def new_cache(self, batch: int, max_len: int | None = None, device=None, dtype=None,
                  loops: int | None = None):
        """A KV cache with a slot per block application and thinking pass."""
        c = self.config
        layers = self.layers_per_pass(loops) * (c.think_steps + 1)
        weight = self.tok_emb.weight
        return KVCache(layers, batch, c.n_kv_heads, max_len or c.context_len, c.head_dim,
                       device or weight.device, dtype or weight.dtype)

    # ------------------------------------------------------------------ introspection

    @staticmethod
    def parameter_group(name: str) -> str:
        """Merge/optimizer group: per-loop adapters (LoRA, loop embeddings) are their own
        "loop_adapters" group; the rest follows the Llama groups."""
        if ".lora_" in name or name.startswith("loop_emb"):
            return "loop_adapters"
        if name.startswith("emb_proj"):
            return "embeddings"
        return Llama.parameter_group(name)

    def parameter_breakdown(self) -> dict[str, int]:
        """Exact parameter count per part, in the order a reader meets them."""
        c = self.config
        notes = {"tok_emb.weight": " (tied head)" if c.tie_embeddings else "",
                 "loop_emb.weight": f" ({c.max_loops} loops)"}
        parts: dict[str, int] = {}
        for name, p in self.named_parameters():
            head, _, rest = name.partition(".")
            key = f"{head}.*.{rest.split('.', 1)[1]}" if head in ("prelude", "coda") else name
            if ".lora_" in name:
                key += f" ({c.max_loops} loops, rank {c.lora_rank})"
            key += notes.get(name, "")
            parts[key] = parts.get(key, 0) + p.numel()
        return parts
# %% end export


# --------------------------------------------------------------------------- the record

PRESETS = {
    "blink-1": Preset(
        "Blink-1 shape: byte model, dim 3, one shared block looped 2x (8 loop embeddings, "
        "rank-2 LoRA on wqkv per loop), 1 head, RoPE 1e7, SwiGLU 6, tied, block-sparse "
        "attention (32/top-2/16)",
        model={"dim": 3, "n_heads": 1, "n_kv_heads": 1, "ffn_hidden": 6, "context_len": 256,
               "rope_base": 1e7, "tie_embeddings": True, "n_prelude": 0, "n_coda": 0,
               "loops": 2, "max_loops": 8, "lora_rank": 2, "lora_targets": ["wqkv"],
               "sparse_attention": {"block_size": 32, "top_k": 2, "window": 16}},
        train={"lr": 1.5e-3, "optimizer": "nadamw", "schedule": "wsd", "warmup_steps": 20,
               "batch_size": 64, "seq_len": 0}),
    "looped-1m": Preset(
        "A ~1M looped model for thinking experiments: Glint-1.3's block shape (dim 128, 4 "
        "heads, SwiGLU 384, BPE 500, context 256), 1 prelude + 1 coda block, one shared block "
        "looped 8x with rank-16 LoRA per loop",
        model={"dim": 128, "n_heads": 4, "n_kv_heads": 4, "ffn_hidden": 384, "context_len": 256,
               "rope_base": 10000.0, "tie_embeddings": True, "n_prelude": 1, "n_coda": 1,
               "loops": 8, "max_loops": 8, "lora_rank": 16,
               "lora_targets": ["wqkv", "wo", "w13", "w2"], "think_steps": 0},
        tokenizer={"kind": "bpe", "vocab_size": 500},
        train={"lr": 1e-3, "optimizer": "nadamw", "schedule": "wsd", "warmup_steps": 50,
               "batch_size": 16, "weight_decay": 0.05, "grad_clip": 1.0, "beta1": 0.9,
               "beta2": 0.95}),
    "shard-50m": Preset(
        "Shard-50M shape: factorized embedding (vocab -> 128 -> 640), 4 prelude + 4 coda unique "
        "blocks, one shared block looped 16x with rank-8 LoRA per loop (all projections), BPE "
        "8192, context 1024",
        model={"dim": 640, "n_heads": 10, "n_kv_heads": 10, "ffn_hidden": 1888,
               "context_len": 1024, "rope_base": 10000.0, "tie_embeddings": True, "emb_dim": 128,
               "n_prelude": 4, "n_coda": 4, "loops": 16, "max_loops": 16, "lora_rank": 8,
               "lora_targets": ["wqkv", "wo", "w13", "w2"]},
        tokenizer={"kind": "bpe", "vocab_size": 8192},
        train={"lr": 6e-4, "optimizer": "nadamw", "schedule": "wsd", "warmup_steps": 200,
               "batch_size": 32, "weight_decay": 0.1, "grad_clip": 1.0, "beta1": 0.9,
               "beta2": 0.95}),
}


def depth_of(names, config: LoopedConfig) -> dict[str, float | tuple[float, ...]]:
    """Depth in the order a token meets the weights: prelude blocks, then the loops, then the
    coda blocks, one slot each, spread over [0, 1] (slot / (slots - 1)). A loop's own pieces
    (its row of the stacked LoRA tensors and of `loop_emb`) sit at that loop's slot; the
    shared block's full-rank weights serve every loop and sit in the middle of the loops.
    Loops are counted to max_loops, since every held adapter has its own place in depth."""
    if config is None:
        raise ValueError("looped depth needs the model config")
    p, loops, c = config.n_prelude, config.max_loops, config.n_coda
    last = max(1, p + loops + c - 1)
    per_loop = tuple((p + i) / last for i in range(loops))
    depths: dict[str, float | tuple[float, ...]] = {}
    for name in names:
        head, _, rest = name.partition(".")
        if ".lora_" in name or head == "loop_emb":
            depths[name] = per_loop
        elif head == "shared":
            depths[name] = (p + (loops - 1) / 2) / last
        elif head in ("prelude", "coda"):
            index = int(rest.split(".", 1)[0])
            depths[name] = (index if head == "prelude" else p + loops + index) / last
    return depths


def c_engine_spec(model: Looped):
    """The model in the C engine's layout: stored blocks prelude, shared, coda; one block
    application per prelude block, per loop (with its loop embedding and LoRA) and per coda
    block, at the loop count `tinylm generate` runs (`model.loops`)."""
    from tinylm.models.family import CEngineSpec
    from tinylm.models.llama import c_block_tensors, c_settings

    c = model.config
    if c.think_steps:
        raise ValueError(f"think_steps {c.think_steps}: the C engine runs no continuous-thought "
                         f"passes")
    blocks = [*model.prelude, model.shared, *model.coda]
    shared = c.n_prelude
    tensors = [("tok_emb", model.tok_emb.weight.detach())]
    if model.emb_proj is not None:
        tensors.append(("emb_proj", model.emb_proj.weight.detach()))
    for i, block in enumerate(blocks):
        tensors += c_block_tensors(f"blocks.{i}", block)
    owners = {"wqkv": model.shared.attn, "wo": model.shared.attn, "w13": model.shared.mlp,
              "w2": model.shared.mlp}
    adapters = {name: getattr(owners[name], name) for name in LORA_TARGETS
                if isinstance(getattr(owners[name], name), LoopLoRALinear)}
    for name in LORA_TARGETS:  # the engine's target order
        if name in adapters:
            tensors += [(f"shared.{name}.lora_A", adapters[name].lora_A.detach()),
                        (f"shared.{name}.lora_B", adapters[name].lora_B.detach())]
    tensors += [("loop_emb", model.loop_emb.weight.detach()), ("norm", model.norm.weight.detach())]
    if model.lm_head is not None:
        tensors.append(("lm_head", model.lm_head.weight.detach()))
    half = c.head_dim // 2  # the rotary half; an odd head's last dim passes through
    tensors += [("rope_cos", model.rope_cos[:, :half]), ("rope_sin", model.rope_sin[:, :half])]
    sparse = BlockSparseConfig(**c.sparse_attention) if c.sparse_attention else None
    mask = sum(1 << LORA_TARGETS.index(name) for name in adapters)
    settings = c_settings(c, len(blocks), emb_dim=c.emb_dim, lora_rank=c.lora_rank if
                          adapters else 0, lora_mask=mask, lora_sets=c.max_loops,
                          lora_block=shared, loop_embs=c.max_loops, rot_half=half,
                          sparse_block=sparse.block_size if sparse else 0,
                          sparse_top_k=sparse.top_k if sparse else 0,
                          sparse_window=sparse.window if sparse else 0)
    applications = ([(i, -1) for i in range(c.n_prelude)]
                    + [(shared, loop) for loop in range(model.loops)]
                    + [(shared + 1 + i, -1) for i in range(c.n_coda)])
    return CEngineSpec(settings, tuple(applications), tuple(tensors))


def no_weight_decay(name: str, param) -> bool:
    """Embeddings (token, factorization, loop) and 1-D tensors are exempt, as in llama."""
    return param.ndim < 2 or name.startswith(("tok_emb", "emb_proj", "loop_emb"))


FAMILY = Family(
    name="looped", config_class=LoopedConfig, model_class=Looped, presets=PRESETS,
    groups=("embeddings", "norms", "attention", "mlp", "loop_adapters", "other"),
    group_of=Looped.parameter_group, depth_of=depth_of, fused_splits=fused_splits,
    align=None,  # the shared block's per-loop adapters would need permuting too; not built
    no_weight_decay=no_weight_decay,
    export=ExportSpec(sources=("tinylm.models.common", "tinylm.models.lora",
                               "tinylm.models.sparse_attention", "tinylm.models.llama",
                               "tinylm.models.looped"),
                      model="Looped", config="LoopedConfig",
                      notes="Looped model: `model.loops = 8` runs the shared block 8 times per "
                            "token (any count up\nto max_loops; `loops` of MODEL_CONFIG is what "
                            "tinylm generate uses)."),
    c_export=c_engine_spec,
    # Unrolling the loop into distinct Llama layers (LoRA merged per loop) would be exact but
    # for the loop embeddings, which add a learned vector to the residual stream before each
    # loop: LlamaForCausalLM has no such term (nor a factorized embedding, nor partial RoPE).
    hf=HFAdapter(refusal="its per-loop embeddings add a learned vector to the residual stream "
                         "before each loop, which LlamaForCausalLM cannot express"))
