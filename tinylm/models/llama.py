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

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.models.common import (CausalSelfAttention, KVCache, RMSNorm, SwiGLU, init_linear_,
                                  positions_end, residual_std, rope_rows, rope_tables)
from tinylm.models.family import AlignSpec, CEngineSpec, ExportSpec, Family, HFAdapter, Preset
from tinylm.models.llama_hf import llama_from_hf, llama_to_hf

# %% export (copied into the single-file export; see export/single_file.py)


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
    think_steps: int = 0  # continuous-thought passes (COCONUT); see looped.py's docstring

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
        if self.think_steps < 0:
            raise ValueError(f"think_steps must be >= 0, got {self.think_steps}")

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
        # continuous thinking: how much of each thought enters the next pass (zero-init)
        self.think_gate = (nn.Parameter(torch.zeros(config.think_steps))
                           if config.think_steps else None)
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

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, pos: int = 0):
        """idx (B, T) token ids at positions [pos, pos+T) -> logits (B, T, vocab)."""
        length = idx.shape[1]
        end = positions_end(pos, length)  # pos: an int, or (B,) per-row positions
        if end > self.config.context_len:
            raise ValueError(f"positions up to {end} exceed the context length "
                             f"{self.config.context_len}")
        cos, sin = rope_rows(self.rope_cos, self.rope_sin, pos, length)
        x = tokens = self.tok_emb(idx)  # (B, T, dim)
        for step in range(self.config.think_steps + 1):
            if step:  # a continuous thought, fed back beside the tokens (see looped.py)
                x = tokens + self.think_gate[step - 1] * self.norm(x)
            for i, block in enumerate(self.layers):
                x = block(x, cos, sin, cache, step * len(self.layers) + i, pos)
        return self.head(self.norm(x))

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return hidden @ weight.t()  # (B, T, vocab)

    def new_cache(self, batch: int, max_len: int | None = None, device=None, dtype=None):
        c = self.config  # one slot per layer and thinking pass
        return KVCache(c.n_layers * (c.think_steps + 1), batch, c.n_kv_heads,
                       max_len or c.context_len, c.head_dim,
                       device or self.tok_emb.weight.device, dtype or self.tok_emb.weight.dtype)

    def fast_decoder(self) -> "FastDecoder | None":
        """A `FastDecoder` for generation, or None when this is not a plain Llama: a subclass,
        thinking passes, module hooks, adapters or a custom `attention_fn`, all of which the
        fast path would skip. Generation then calls `forward` for every step."""
        plain = (Llama, Block, RMSNorm, CausalSelfAttention, SwiGLU, nn.Embedding, nn.Linear,
                 nn.ModuleList)
        if type(self) is not Llama or getattr(self.config, "think_steps", 0):
            return None
        for module in self.modules():
            if (type(module) not in plain or module._forward_hooks or module._forward_pre_hooks
                    or getattr(module, "attention_fn", None) is not None):
                return None
        # Built once and kept (a copy of the weights) until a tensor changes: an optimizer
        # step or load_state_dict bumps a version, .to() moves the storage. (Tensors made
        # under inference_mode have no version; in-place edits to those go unnoticed.)
        key = tuple((t.data_ptr(), None if t.is_inference() else t._version, t.dtype)
                    for t in [*self.parameters(), *self.buffers()])
        kept = self.__dict__.get("_fast_decoder")  # outside nn.Module's registries on purpose
        if kept is None or kept[0] != key:
            kept = self.__dict__["_fast_decoder"] = (key, FastDecoder(self))
        return kept[1]

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


# --------------------------------------------------------------------------- fast decoding

class FastDecoder:
    """Llama's forward for one new token per row, rewritten for speed; what generation calls.

    At this size a decoding step costs dispatch, not arithmetic: `forward` on one token runs
    about 45 module calls and 200 small ops whose fixed costs outweigh the few hundred
    kFLOPs they do. This computes the same function, `forward(ids[:, None], cache, pos)[:, -1]`,
    with under half the ops and no module calls (measured on the Glint-1.3 shape, one CPU
    thread: 0.41 against 0.85 ms a step at batch 1, 2.9 against 4.5 ms at batch 64):
    - weights are copied once, transposed to (in, out) (a (1, in) x (in, out) product is about
      twice as fast on CPU as the transposed layout), with each RMSNorm gain and sqrt(dim)
      folded into the matrix that follows the norm, and 1/sqrt(head_dim) into the query rows;
    - so RMSNorm becomes x * rsqrt(|x|^2 + dim * eps), four small ops instead of seven;
    - RoPE rotates q and k of every head in one go, as x * cos + swap_halves(x) * sin, the swap
      one roll, the tables expanded per head with the sign folded into sin;
    - residual adds ride on the output projections (`addmm`); grouped-query heads are viewed as
      extra query rows of their kv head, so nothing is repeated.
    The logits equal forward's up to float rounding (the tests hold it to 1e-5) and the cache
    it writes is forward's, so prefill and cache rebuilds go through `forward` and the steps in
    between through here. Weights are read when the decoder is built: build a new one after
    changing them.
    """

    def __init__(self, model: "Llama"):
        c = model.config
        self.n_heads, self.n_kv_heads, self.head_dim = c.n_heads, c.n_kv_heads, c.head_dim
        self.hidden = c.ffn_hidden
        root = c.dim ** 0.5
        with torch.no_grad():
            def folded(weight, gain):  # (out, in) -> (in, out), gain folded into the rows
                return (weight * (gain * root)).t().contiguous()

            self.layers = []
            for block in model.layers:
                wqkv = block.attn.wqkv.weight.clone()
                wqkv[:c.n_heads * c.head_dim] *= c.head_dim ** -0.5
                self.layers.append((folded(wqkv, block.attn_norm.weight),
                                    block.attn.wo.weight.t().contiguous(),
                                    folded(block.mlp.w13.weight, block.mlp_norm.weight),
                                    block.mlp.w2.weight.t().contiguous()))
            head = model.tok_emb.weight if model.lm_head is None else model.lm_head.weight
            self.head = folded(head, model.norm.weight)  # (dim, vocab)
            self.embedding = model.tok_emb.weight.detach()
            cos, sin = model.rope_cos[:, None], model.rope_sin[:, None]  # (ctx, 1, D/2)
            heads = (1, c.n_heads + c.n_kv_heads, 1)
            self.cos = torch.cat([cos, cos], -1).repeat(heads)  # (ctx, H + Hkv, D)
            self.sin = torch.cat([-sin, sin], -1).repeat(heads)
            self.eps = torch.tensor(c.dim * c.norm_eps, dtype=head.dtype, device=head.device)

    def _rms_scale(self, x: torch.Tensor) -> torch.Tensor:
        """1 / sqrt(|x|^2 + dim * eps) per row; times sqrt(dim) (in the weights) = RMSNorm."""
        return (x * x).sum(-1, keepdim=True).add_(self.eps).rsqrt_()

    def step(self, ids: torch.Tensor, cache: KVCache, pos: int) -> torch.Tensor:
        """ids (B,) at position pos -> logits (B, vocab); writes k, v at pos into the cache."""
        if pos >= cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions, asked for {pos + 1}")
        batch, heads, kv_heads, hidden = ids.shape[0], self.n_heads, self.n_kv_heads, self.hidden
        qk_heads, half = heads + kv_heads, self.head_dim // 2
        cos, sin = self.cos[pos], self.sin[pos]  # (H + Hkv, D)
        x = F.embedding(ids, self.embedding)  # (B, dim)
        per_layer = zip(self.layers, cache.k.unbind(0), cache.v.unbind(0))  # (B, Hkv, S, D)
        for (wqkv, wo, w13, w2), keys, values in per_layer:
            y = ((x * self._rms_scale(x)) @ wqkv).view(batch, -1, self.head_dim)  # (B, H+2Hkv, D)
            qk = y[:, :qk_heads]
            rotated = torch.addcmul(qk * cos, qk.roll(half, -1), sin)  # RoPE: [x2, x1]
            keys[:, :, pos] = rotated[:, heads:]
            values[:, :, pos] = y[:, qk_heads:]
            q = rotated[:, :heads].view(batch, kv_heads, -1, self.head_dim)  # GQA: query rows
            k, v = keys[:, :, :pos + 1], values[:, :, :pos + 1]  # (B, Hkv, pos + 1, D)
            if batch == 1:  # one fused call is cheapest when dispatch is the cost
                out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
            else:  # SDPA's flash kernel zero-fills scratch per call: plain matmuls, ~12% faster
                out = torch.matmul(torch.matmul(q, k.transpose(-1, -2)).softmax(-1), v)
            x = torch.addmm(x, out.reshape(batch, -1), wo)
            gate_up = (x * self._rms_scale(x)) @ w13  # (B, 2 * hidden)
            x = torch.addmm(x, F.silu(gate_up[:, :hidden]).mul_(gate_up[:, hidden:]), w2)
        return (x * self._rms_scale(x)) @ self.head
# %% end export


# --------------------------------------------------------------------------- the record

PRESETS = {
    "debug": Preset(
        "A tiny byte-level Llama for tests and smoke runs",
        model={"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 64,
               "context_len": 64, "tie_embeddings": True},
        train={"lr": 3e-3, "warmup_steps": 10, "schedule": "cosine", "batch_size": 8}),
    "glint-1.3": Preset(
        "Glint-1.3 shape: Llama-style decoder, dim 128, 4 layers, byte-level BPE 500, "
        "context 256, tied embeddings",
        model={"dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4, "ffn_hidden": 384,
               "context_len": 256, "rope_base": 10000.0, "tie_embeddings": True},
        tokenizer={"kind": "bpe", "vocab_size": 500},
        train={"lr": 8e-4, "warmup_steps": 200, "schedule": "cosine", "weight_decay": 0.05,
               "grad_clip": 0.5, "beta1": 0.9, "beta2": 0.95, "optimizer": "adamw"}),
    "glint-mini": Preset(
        "A small Glint-style Llama for CPU runs: dim 64, 2 layers, 4 heads (2 KV), SwiGLU 192, "
        "context 128, byte-level BPE 500",
        model={"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 192,
               "context_len": 128, "tie_embeddings": True},
        tokenizer={"kind": "bpe", "vocab_size": 500},
        train={"lr": 3e-3, "warmup_steps": 30, "schedule": "cosine", "weight_decay": 0.05,
               "grad_clip": 1.0, "beta1": 0.9, "beta2": 0.95, "batch_size": 16}),
}

_LAYER = re.compile(r"^layers\.(\d+)\.")


def block_index(name: str) -> int | None:
    """i of a tensor named `layers.{i}.…`, None outside the layers."""
    match = _LAYER.match(name)
    return int(match.group(1)) if match else None


def depth_of(names, config) -> dict[str, float]:
    """Layer i of n sits at depth i / (n - 1), as mergekit spreads a gradient over layers;
    embeddings and the final norm are outside the stack. Without a config, n is read off the
    names."""
    found = {name: block_index(name) for name in names}
    n_layers = config.n_layers if config is not None else \
        1 + max((i for i in found.values() if i is not None), default=0)
    return {name: 0.0 if n_layers <= 1 else i / (n_layers - 1)
            for name, i in found.items() if i is not None}


def fused_splits(config):
    """Row splits of the fused projections, for merging: wqkv -> [q, k, v], w13 -> [gate, up],
    the tensors mergekit sees in the Hugging Face layout. Any family built from llama's `Block`
    shares it (the looped family does)."""
    q_rows = config.n_heads * config.head_dim
    kv_rows = config.n_kv_heads * config.head_dim

    def split_of(name: str) -> list[int] | None:
        if name.endswith("attn.wqkv.weight"):
            return [q_rows, kv_rows, kv_rows]
        if name.endswith("mlp.w13.weight"):
            return [config.ffn_hidden, config.ffn_hidden]
        return None

    return split_of


def no_weight_decay(name: str, param) -> bool:
    """Matrices decay; the token embedding (also the tied head) and 1-D tensors (norm gains,
    thinking gates) do not, as nanoGPT and litgpt do: decaying a norm gain towards zero fights
    the normalisation."""
    return param.ndim < 2 or name.startswith("tok_emb")


def align_spec(config: LlamaConfig) -> AlignSpec:
    return AlignSpec(tuple(f"layers.{i}" for i in range(config.n_layers)), config.n_heads,
                     config.n_kv_heads, config.head_dim, config.ffn_hidden)


# --------------------------------------------------------------------------- C engine

def c_block_tensors(prefix: str, block: Block, matrix=lambda linear: linear.weight.detach()):
    """One llama block's tensors in the C engine's order (`matrix` turns a linear layer into
    what the engine stores: its weight, or bitnet's (trits, row scales))."""
    return ((f"{prefix}.attn_norm", block.attn_norm.weight.detach()),
            (f"{prefix}.attn.wqkv", matrix(block.attn.wqkv)),
            (f"{prefix}.attn.wo", matrix(block.attn.wo)),
            (f"{prefix}.mlp_norm", block.mlp_norm.weight.detach()),
            (f"{prefix}.mlp.w13", matrix(block.mlp.w13)),
            (f"{prefix}.mlp.w2", matrix(block.mlp.w2)))


def c_settings(config, blocks: int, **overrides) -> dict:
    """The engine settings of a llama-shaped config: dense attention, full rotary, no loops."""
    settings = {"vocab": config.vocab_size, "dim": config.dim, "emb_dim": 0,
                "heads": config.n_heads, "kv_heads": config.n_kv_heads,
                "head_dim": config.head_dim, "ffn": config.ffn_hidden,
                "context": config.context_len, "blocks": blocks,
                "tied": int(config.tie_embeddings), "ternary": 0, "act_quant": 0, "lora_rank": 0,
                "lora_mask": 0, "lora_sets": 0, "lora_block": 0, "loop_embs": 0,
                "rot_half": config.head_dim // 2, "sparse_block": 0, "sparse_top_k": 0,
                "sparse_window": 0, "eps": config.norm_eps}
    return {**settings, **overrides}


def c_engine_spec(model: Llama, matrix=lambda linear: linear.weight.detach(),
                  **settings) -> CEngineSpec:
    """The model in the C engine's layout; `matrix` and `settings` let bitnet reuse it."""
    c = model.config
    if c.think_steps:
        raise ValueError(f"think_steps {c.think_steps}: the C engine runs no continuous-thought "
                         f"passes")
    tensors = [("tok_emb", model.tok_emb.weight.detach())]
    for i, block in enumerate(model.layers):
        tensors += c_block_tensors(f"layers.{i}", block, matrix)
    tensors.append(("norm", model.norm.weight.detach()))
    if model.lm_head is not None:
        tensors.append(("lm_head", model.lm_head.weight.detach()))
    tensors += [("rope_cos", model.rope_cos), ("rope_sin", model.rope_sin)]
    return CEngineSpec(c_settings(c, c.n_layers, **settings), tuple((i, -1) for i in range(c.n_layers)),
                       tuple(tensors))


FAMILY = Family(
    name="llama", config_class=LlamaConfig, model_class=Llama, presets=PRESETS,
    groups=("embeddings", "norms", "attention", "mlp", "other"),
    group_of=Llama.parameter_group, depth_of=depth_of, fused_splits=fused_splits,
    align=align_spec, no_weight_decay=no_weight_decay,
    export=ExportSpec(sources=("tinylm.models.common", "tinylm.models.llama"),
                      model="Llama", config="LlamaConfig"),
    c_export=c_engine_spec,
    hf=HFAdapter(architecture="LlamaForCausalLM", to_hf=llama_to_hf, from_hf=llama_from_hf))
