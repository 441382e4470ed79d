"""BitNet b1.58 ternary decoder: the `bitnet` family (tiny-tiny-stories and kin).

Built from the tiny-tiny-stories model card (hidude562, ../shared/docs/model-cards/
tiny-tiny-stories.txt) and the BitNet b1.58 paper (Ma et al. 2024, "The Era of 1-bit LLMs").
The card's model is a Llama-shaped decoder (RoPE, RMSNorm, SwiGLU, tied full-precision
embeddings) whose every Q/K/V/O and SwiGLU matrix is a BitLinear: "weights are quantized to
{-1, 0, +1} during the forward pass via round(W / mean(|W|)), with gradients flowing through a
straight-through estimator to full-precision latent weights". So this module is llama's model
with those linears swapped, by composition (as looped.py reuses llama's block):

- `BitLinear` is an `nn.Linear` whose forward uses absmean-ternary weights,
  W_q = RoundClip(W / (mean|W| + eps), -1, 1) * mean|W| (the paper's eq. 1-3), and whose
  backward is the identity to the latent fp32 weights (the STE: W + (W_q - W).detach()).
- One absmean scale per *matrix* of the card: tinylm fuses q|k|v into `wqkv` and gate|up into
  `w13` (llama's layout, kept so merges, alignment and the export see llama's tensors), and a
  BitLinear there quantizes each part with its own scale, as separate Q, K, V matrices would be.
- Activations: `act_quant` (on by default) quantizes each BitLinear input per token to 8 bits
  by absmax, x_q = clip(round(x * 127 / max|x|), -128, 127) * max|x| / 127, with the STE, as
  the b1.58 paper does; the card names only the weights, so off is a setting, not a fork.
- The state dict holds the latent weights (what trains, resumes and merges); the forward
  re-quantizes them every call. `tinylm export bitnet` packs the ternary values (2 or 1.6 bits
  each) and `tinylm.export.bitnet_pack` runs a model straight from them.
- No extra norms: the BitNet papers put a LayerNorm (SubLN) inside each BitLinear; the card's
  count leaves no room for one (below), so the only norms are the pre-norm RMSNorms.

tiny-tiny-stories, `tinylm info tiny-tiny-stories`: 998,784 parameters, the card's figure
exactly (vocab 192, dim 128, 5 layers, 4 heads of 32, SwiGLU 336, tied):

    tok_emb.weight              192 x 128    24,576   fp embedding, also the output head
    layers.*.attn_norm.weight   5 x 128         640   RMSNorm before attention
    layers.*.attn.wqkv.weight   5 x 384 x 128  245,760  BitLinear q|k|v (three scales)
    layers.*.attn.wo.weight     5 x 128 x 128   81,920  BitLinear output
    layers.*.mlp_norm.weight    5 x 128         640   RMSNorm before the MLP
    layers.*.mlp.w13.weight     5 x 672 x 128  430,080  BitLinear gate|up (two scales)
    layers.*.mlp.w2.weight      5 x 128 x 336  215,040  BitLinear down
    norm.weight                     128         128   final RMSNorm
                                              -------
                                              998,784

How the norms were worked out from the count: embeddings plus the 20 matrices give 997,376;
the remaining 1,408 = 11 x 128 are eleven 128-wide gains, which is two pre-norms per block and
one final norm. A SubLN inside each of the 20 BitLinears would add 20 more (at least 2,560
parameters), and an untied head 24,576, so the card's model has neither.

On this CPU (2 shared cores, one thread, nice'd): `tinylm train --preset tiny-tiny-stories
--data tinystories --steps 400 --batch-size 16 --seq-len 256 --warmup-steps 40 --lr 3e-3`
trained the unigram-192 tokenizer and 400 steps (1,638,400 tokens) in about 24 minutes to a
validation loss of 2.203 nats/token (3.082 at step 100, 2.599 at 200, 2.332 at 300); the card
reports 1.2087 after 100K steps at effective batch 384 on two GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.models.family import ExportSpec, Family, HFAdapter, Preset
from tinylm.models.llama import (Llama, LlamaConfig, align_spec, depth_of, fused_splits,
                                 no_weight_decay)

# %% export (copied into the single-file export; see export/single_file.py)

WEIGHT_EPS = 1e-5  # the paper's epsilon: keeps an all-zero matrix from dividing by zero
ACT_LEVELS = 127  # 8-bit signed activations: round(x * 127 / absmax) lies in [-127, 127]


@dataclass
class BitNetConfig(LlamaConfig):
    vocab_size: int = 192
    dim: int = 128
    n_layers: int = 5
    ffn_hidden: int = 336
    context_len: int = 512
    act_quant: bool = True
    """Quantize every BitLinear input per token to 8 bits by absmax (BitNet b1.58); False:
    ternary weights only, full-precision activations."""


def ternary(weight: torch.Tensor, parts: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean ternary quantization of a (fused) weight: trits (out, in) in {-1, 0, 1} (same
    dtype as the weight) and the scale of each row (out,), one absmean per part of `parts`
    (row counts). trits * scale[:, None] is the quantized weight; the packed export and the
    forward both call this, so they agree to the bit."""
    scales = torch.stack([p.abs().mean() for p in weight.split(list(parts))])  # (parts,)
    scales = scales.clamp(min=WEIGHT_EPS)
    row_scale = scales.repeat_interleave(torch.tensor(parts, device=weight.device))  # (out,)
    trits = (weight / row_scale[:, None]).round().clamp(-1, 1)
    return trits, row_scale


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax 8-bit quantization: integers (as x's dtype) in [-127, 127] and the
    per-token step (..., 1); integers * step is the quantized activation."""
    step = x.abs().amax(-1, keepdim=True).clamp(min=WEIGHT_EPS) / ACT_LEVELS
    return (x / step).round().clamp(-ACT_LEVELS - 1, ACT_LEVELS), step


class BitLinear(nn.Linear):
    """A bias-free linear layer with ternary weights in the forward pass and the straight-
    through estimator to its latent `weight` in the backward pass. `parts` splits the output
    rows into matrices that get their own absmean scale (q|k|v, gate|up)."""

    def __init__(self, in_features: int, out_features: int, parts: tuple[int, ...] | None = None,
                 act_quant: bool = True):
        super().__init__(in_features, out_features, bias=False)
        self.parts = tuple(parts) if parts else (out_features,)
        if sum(self.parts) != out_features:
            raise ValueError(f"parts {self.parts} do not add up to {out_features} rows")
        self.act_quant = act_quant

    @classmethod
    def replacing(cls, linear: nn.Linear, parts=None, act_quant=True) -> "BitLinear":
        """A BitLinear holding `linear`'s weight Parameter itself (its init is kept)."""
        layer = cls(linear.in_features, linear.out_features, parts, act_quant)
        layer.weight = linear.weight
        return layer

    def quantized_weight(self) -> torch.Tensor:
        trits, row_scale = ternary(self.weight, self.parts)
        return trits * row_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_quant:
            ints, step = quantize_activations(x)
            x = x + (ints * step - x).detach()  # STE: forward quantized, backward identity
        with torch.no_grad():  # the STE's backward ignores how the quantized weight was made
            quantized = self.quantized_weight()
        weight = self.weight
        return F.linear(x, weight + (quantized - weight).detach())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, parts={self.parts}, act_quant={self.act_quant}"


def bit_linears(config: BitNetConfig) -> dict[str, tuple[int, ...]]:
    """Which linears of a llama block become BitLinears, and the row parts of each."""
    q, kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
    return {"attn.wqkv": (q, kv, kv), "attn.wo": (config.dim,),
            "mlp.w13": (config.ffn_hidden, config.ffn_hidden), "mlp.w2": (config.dim,)}


class BitNet(Llama):
    """Llama with every block matrix a BitLinear; embeddings, norms and the head stay fp."""

    family = "bitnet"

    def __init__(self, config: BitNetConfig):
        super().__init__(config)  # llama's layers and init; then swap the block linears
        for block in self.layers:
            for path, parts in bit_linears(config).items():
                owner_name, attr = path.split(".")
                owner = getattr(block, owner_name)
                setattr(owner, attr, BitLinear.replacing(getattr(owner, attr), parts,
                                                         config.act_quant))

    def fast_decoder(self):
        """None: llama's fast decoder folds norm gains into fp weights, which would skip the
        quantization; generation calls `forward` (the packed model is the fast path)."""
        return None

    def ternary_state(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """name -> (trits, row scales) of every BitLinear weight, by state-dict name."""
        return {f"{name}.weight": ternary(module.weight.detach(), module.parts)
                for name, module in self.named_modules() if isinstance(module, BitLinear)}
# %% end export


# --------------------------------------------------------------------------- merge report

def _ternary_names(config: BitNetConfig) -> dict[str, tuple[int, ...]]:
    return {f"layers.{i}.{path}.weight": parts for i in range(config.n_layers)
            for path, parts in bit_linears(config).items()}


def merge_notes(state_a, state_b, merged, config: BitNetConfig) -> dict:
    """What a merge of latent weights did to the ternary weights the model runs on: the
    fraction of ternary values of the merge that differ from A's and from B's (a value that
    changes from -1 to 1 counts once), and how often A and B disagreed to begin with."""
    total = from_a = from_b = a_vs_b = 0
    with torch.no_grad():
        for name, parts in _ternary_names(config).items():
            ta, tb, tm = (ternary(s[name].float(), parts)[0] for s in (state_a, state_b, merged))
            total += tm.numel()
            from_a += int((tm != ta).sum())
            from_b += int((tm != tb).sum())
            a_vs_b += int((ta != tb).sum())
    share = (lambda n: round(n / total, 6)) if total else (lambda n: 0.0)
    return {"ternary_values": total, "flipped_vs_a": share(from_a),
            "flipped_vs_b": share(from_b), "a_b_disagree": share(a_vs_b)}


# --------------------------------------------------------------------------- C engine

def bitnet_c_engine_spec(model: BitNet):
    """llama's C layout with every BitLinear stored as (trits, per-row absmean scales), the
    same `ternary` the forward runs on."""
    from tinylm.models.llama import c_engine_spec

    return c_engine_spec(model, lambda linear: ternary(linear.weight.detach(), linear.parts),
                         ternary=1, act_quant=int(model.config.act_quant))


# --------------------------------------------------------------------------- the record

PRESETS = {
    "bitnet-debug": Preset(
        "A tiny byte-level BitNet b1.58 for tests and smoke runs",
        model={"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 64,
               "context_len": 64, "act_quant": True},
        train={"lr": 3e-3, "warmup_steps": 10, "schedule": "cosine", "batch_size": 8}),
    "tiny-tiny-stories": Preset(
        "tiny-tiny-stories: BitNet b1.58 ternary decoder, dim 128, 5 layers, 4 heads, SwiGLU "
        "336, context 512, SentencePiece unigram 192, tied fp embeddings (998,784 parameters)",
        model={"dim": 128, "n_layers": 5, "n_heads": 4, "n_kv_heads": 4, "ffn_hidden": 336,
               "context_len": 512, "rope_base": 10000.0, "tie_embeddings": True,
               "act_quant": True},
        tokenizer={"kind": "unigram", "vocab_size": 192},
        # the card: AdamW, cosine 1.5e-3 with 1,000 warmup steps, effective batch 384
        train={"lr": 1.5e-3, "warmup_steps": 1000, "schedule": "cosine", "batch_size": 384,
               "optimizer": "adamw"}),
}

FAMILY = Family(
    name="bitnet", config_class=BitNetConfig, model_class=BitNet, presets=PRESETS,
    groups=("embeddings", "norms", "attention", "mlp", "other"),
    group_of=Llama.parameter_group, depth_of=depth_of, fused_splits=fused_splits,
    # permuting rows or columns within a matrix leaves its absmean and each token's absmax
    # unchanged, so llama's weight matching aligns the latent weights soundly
    align=align_spec, no_weight_decay=no_weight_decay, merge_notes=merge_notes,
    export=ExportSpec(sources=("tinylm.models.common", "tinylm.models.llama",
                               "tinylm.models.bitnet"), model="BitNet", config="BitNetConfig",
                      notes="BitNet b1.58: the weights are the fp latent weights; the model "
                            "re-quantizes them to ternary on every forward."),
    c_export=bitnet_c_engine_spec,
    # a dequantized Llama would no longer be ternary nor quantize activations: other logits
    hf=HFAdapter(refusal="its forward quantizes weights to ternary and activations to 8 bits, "
                         "which LlamaForCausalLM does not compute, so no export would give "
                         "equal logits (use `tinylm export bitnet` or `export single-file`)"))
