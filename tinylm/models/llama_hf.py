"""The llama family <-> Hugging Face `LlamaForCausalLM`: the `hf` adapter of llama's record.

tinylm's Llama is transformers' Llama with two projections fused, so the mapping is renaming
and splitting, nothing more:
- `attn.wqkv` (rows q | k | v) <-> `self_attn.{q,k,v}_proj`; `mlp.w13` (rows gate | up) <->
  `mlp.{gate,up}_proj`;
- RoPE needs no permutation: both rotate the two *halves* of each head (transformers'
  `rotate_half`; `tinylm.models.common.apply_rope`), with the same inv_freq =
  base^(-2i/head_dim) and `rope_theta` = our `rope_base`;
- tied embeddings <-> `tie_word_embeddings` (no `lm_head.weight` is written when tied);
  `rms_norm_eps` = `norm_eps`; `max_position_embeddings` = `context_len`.
The same block mapping serves any family built from llama's `Block` (`hf_tensors` takes the
blocks' tensors, so a looped model can hand in its unrolled loop).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from tinylm.errors import TinyLMError

# tinylm block tensor -> transformers decoder-layer tensor, where no split is involved
_RENAMED = {"attn_norm.weight": "input_layernorm.weight",
            "attn.wo.weight": "self_attn.o_proj.weight",
            "mlp_norm.weight": "post_attention_layernorm.weight",
            "mlp.w2.weight": "mlp.down_proj.weight"}
_QKV = ("q_proj", "k_proj", "v_proj")


def hf_config(*, vocab_size: int, dim: int, n_layers: int, n_heads: int, n_kv_heads: int,
              ffn_hidden: int, context_len: int, rope_base: float, norm_eps: float,
              tie_embeddings: bool, eos_id: int | None = None) -> dict:
    """A `LlamaForCausalLM` config.json. rope_theta is written both ways: top level (what
    transformers 4.x reads) and in `rope_parameters` (transformers 5)."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": vocab_size, "hidden_size": dim, "intermediate_size": ffn_hidden,
            "num_hidden_layers": n_layers, "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv_heads, "head_dim": dim // n_heads,
            "max_position_embeddings": context_len, "rms_norm_eps": norm_eps,
            "rope_theta": rope_base,
            "rope_parameters": {"rope_type": "default", "rope_theta": rope_base},
            "hidden_act": "silu", "tie_word_embeddings": tie_embeddings,
            "attention_bias": False, "mlp_bias": False, "dtype": "float32",
            "bos_token_id": None, "eos_token_id": eos_id, "pad_token_id": None}


def hf_tensors(embedding: torch.Tensor, blocks: list[Mapping[str, torch.Tensor]],
               norm: torch.Tensor, head: torch.Tensor | None, n_heads: int,
               n_kv_heads: int) -> dict[str, torch.Tensor]:
    """Tensors under transformers' names from a token embedding, llama blocks (each a dict of
    `attn_norm.weight`, `attn.wqkv.weight`, ... as in `llama.Block`), the final norm and an
    untied head (None when tied)."""
    out = {"model.embed_tokens.weight": embedding, "model.norm.weight": norm}
    if head is not None:
        out["lm_head.weight"] = head
    for i, block in enumerate(blocks):
        pre = f"model.layers.{i}."
        for ours, theirs in _RENAMED.items():
            out[pre + theirs] = block[ours]
        wqkv = block["attn.wqkv.weight"]  # (q + 2 kv, dim)
        head_dim = wqkv.shape[0] // (n_heads + 2 * n_kv_heads)
        parts = wqkv.split([n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim])
        for name, part in zip(_QKV, parts):
            out[f"{pre}self_attn.{name}.weight"] = part
        gate, up = block["mlp.w13.weight"].chunk(2)  # (2 hidden, dim) -> 2 x (hidden, dim)
        out[pre + "mlp.gate_proj.weight"], out[pre + "mlp.up_proj.weight"] = gate, up
    return {name: t.detach().contiguous().clone() for name, t in out.items()}


# --------------------------------------------------------------------------- llama -> HF

def llama_to_hf(state: Mapping[str, torch.Tensor], config) -> tuple[dict, dict]:
    """(config.json dict, tensors) of `LlamaForCausalLM` for a llama state dict."""
    if getattr(config, "think_steps", 0):
        raise TinyLMError(f"this model runs {config.think_steps} continuous-thought passes "
                          f"(think_steps); LlamaForCausalLM has no equivalent")
    blocks = [{key: state[f"layers.{i}.{key}"] for key in _BLOCK_KEYS}
              for i in range(config.n_layers)]
    tensors = hf_tensors(state["tok_emb.weight"], blocks, state["norm.weight"],
                         None if config.tie_embeddings else state["lm_head.weight"],
                         config.n_heads, config.n_kv_heads)
    return hf_config(vocab_size=config.vocab_size, dim=config.dim, n_layers=config.n_layers,
                     n_heads=config.n_heads, n_kv_heads=config.n_kv_heads,
                     ffn_hidden=config.ffn_hidden, context_len=config.context_len,
                     rope_base=config.rope_base, norm_eps=config.norm_eps,
                     tie_embeddings=config.tie_embeddings), tensors


_BLOCK_KEYS = ("attn_norm.weight", "attn.wqkv.weight", "attn.wo.weight", "mlp_norm.weight",
               "mlp.w13.weight", "mlp.w2.weight")


# --------------------------------------------------------------------------- HF -> llama

def _rope_theta(hf: Mapping) -> float:
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise TinyLMError(f"RoPE scaling {kind!r} is not supported (tinylm's Llama has plain "
                          f"RoPE)")
    return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _check_supported(hf: Mapping) -> None:
    """Refuse, with one line, a config.json whose model tinylm's Llama cannot compute."""
    arch = hf.get("architectures") or []
    if hf.get("model_type") != "llama" or arch != ["LlamaForCausalLM"]:
        raise TinyLMError(f"not a Llama model (model_type {hf.get('model_type')!r}, "
                          f"architectures {arch}); only LlamaForCausalLM is imported")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads"):
        if not isinstance(hf.get(key), int) or hf[key] < 1:
            raise TinyLMError(f"config.json: {key} must be a positive integer, got "
                              f"{hf.get(key)!r}")
    unsupported = [(hf.get("attention_bias", False), "attention_bias"),
                   (hf.get("mlp_bias", False), "mlp_bias"),
                   (hf.get("hidden_act", "silu") != "silu", f"hidden_act {hf.get('hidden_act')}"),
                   (hf.get("pretraining_tp", 1) != 1, "pretraining_tp != 1")]
    for bad, what in unsupported:
        if bad:
            raise TinyLMError(f"config.json: {what} is not supported by tinylm's Llama")
    head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    if head_dim * hf["num_attention_heads"] != hf["hidden_size"]:
        raise TinyLMError(f"config.json: head_dim {head_dim} x {hf['num_attention_heads']} heads "
                          f"!= hidden_size {hf['hidden_size']}; tinylm needs dim = heads x "
                          f"head_dim")


def llama_from_hf(hf: Mapping, tensors: Mapping[str, torch.Tensor]):
    """(LlamaConfig, state dict) from a `LlamaForCausalLM` config.json and its tensors."""
    from tinylm.models.llama import LlamaConfig

    _check_supported(hf)
    tied = bool(hf.get("tie_word_embeddings", True))
    try:
        config = LlamaConfig(
            vocab_size=hf["vocab_size"], dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
            n_heads=hf["num_attention_heads"],
            n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
            ffn_hidden=hf["intermediate_size"],
            context_len=int(hf.get("max_position_embeddings", 2048)),
            rope_base=_rope_theta(hf), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=tied)
    except (ValueError, TypeError) as err:
        raise TinyLMError(f"config.json: {err}") from None

    used = {"lm_head.weight"} if tied else set()  # a tied head saved anyway is the embedding

    def get(name: str) -> torch.Tensor:
        if name not in tensors:
            raise TinyLMError(f"the weights lack {name}")
        used.add(name)
        return tensors[name]

    state = {"tok_emb.weight": get("model.embed_tokens.weight"),
             "norm.weight": get("model.norm.weight")}
    if not tied:
        state["lm_head.weight"] = get("lm_head.weight")
    for i in range(config.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        for ours, theirs in _RENAMED.items():
            state[dst + ours] = get(src + theirs)
        state[dst + "attn.wqkv.weight"] = torch.cat([get(f"{src}self_attn.{n}.weight")
                                                     for n in _QKV])
        state[dst + "mlp.w13.weight"] = torch.cat([get(src + "mlp.gate_proj.weight"),
                                                   get(src + "mlp.up_proj.weight")])
    left = sorted(n for n in tensors if n not in used and not n.endswith("rotary_emb.inv_freq"))
    if left:
        raise TinyLMError(f"the weights hold tensors a Llama of this config.json does not "
                          f"({', '.join(left[:3])}{', ...' if len(left) > 3 else ''})")
    return config, {name: t.float().contiguous() for name, t in state.items()}
