"""`tinylm export gguf`: one GGUF file (the `llama` architecture) that llama.cpp runs.

Built on the family's Hugging Face mapping (`Family.hf`, see `export/hf.py`): the model goes
to `LlamaForCausalLM` tensors first, then to GGUF with the `gguf` package (ggml-org/llama.cpp's
gguf-py), following what llama.cpp's `convert_hf_to_gguf.py` does for a Llama:
- names: `token_embd.weight`, `blk.N.attn_norm|attn_q|attn_k|attn_v|attn_output|ffn_norm|
  ffn_gate|ffn_up|ffn_down.weight`, `output_norm.weight`, and `output.weight` only when the
  head is untied (llama.cpp falls back to the embedding);
- q and k rows are permuted from the half-split RoPE layout (HF, tinylm) to the interleaved
  pairs llama.cpp's LLAMA rope rotates: per head, rows (2, head_dim/2) become (head_dim/2, 2);
- f32 throughout, or with `--dtype f16` the matrices in f16 and the norm gains in f32, as the
  converter keeps 1-D tensors.
Tokenizer metadata: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the vocabulary in id
order, the merges and `pre = "gpt-2"` (the GPT-2 split regex `tokenizers.ByteLevel` uses). The
`bytes` tokenizer is written as that same byte-level BPE with no merges, its 256 tokens the
byte symbols in byte order, so llama.cpp encodes text to its UTF-8 bytes; EOS is
`<|endoftext|>` (a control token) at tinylm's EOS id, and its one merge is one that never
applies (`NO_MERGES`: llama.cpp needs the key, gguf-py cannot write an empty array). No BOS
is added. SentencePiece `unigram`
tokenizers are refused: llama.cpp's SPM tokenizer adds a space prefix and byte pieces tinylm's
unigram has not, so the ids would differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from tinylm.errors import TinyLMError
from tinylm.io import temp_prefix, write_error

_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
          "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight",
           "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}


def gguf_name(hf_name: str) -> str:
    """The llama.cpp name of a `LlamaForCausalLM` tensor."""
    if hf_name in _GLOBAL:
        return _GLOBAL[hf_name]
    parts = hf_name.split(".")  # model.layers.{i}.{module...}.weight
    module = ".".join(parts[3:-1])
    if parts[:2] != ["model", "layers"] or module not in _LAYER:
        raise TinyLMError(f"no GGUF name for the tensor {hf_name}")
    return f"blk.{parts[2]}.{_LAYER[module]}.weight"


def interleave_rope_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """q or k rows (heads * head_dim, dim) from half-split to interleaved RoPE pairs."""
    rows, cols = weight.shape
    half = rows // n_heads // 2
    return weight.reshape(n_heads, 2, half, cols).transpose(1, 2).reshape(rows, cols)


def gguf_tensors(hf_config: dict, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GGUF name -> tensor (float32), q/k rows permuted for llama.cpp's rope."""
    out = {}
    for name, tensor in tensors.items():
        if name.endswith("self_attn.q_proj.weight"):
            tensor = interleave_rope_rows(tensor, hf_config["num_attention_heads"])
        elif name.endswith("self_attn.k_proj.weight"):
            tensor = interleave_rope_rows(tensor, hf_config["num_key_value_heads"])
        out[gguf_name(name)] = tensor.detach().float().contiguous()
    return out


# --------------------------------------------------------------------------- tokenizer

# llama.cpp refuses a gpt2 tokenizer without `tokenizer.ggml.merges`, and gguf-py cannot write
# an empty array, so the bytes tokenizer gets one merge that can never apply: its parts are the
# EOS control token, which llama.cpp splits off before BPE, so no word of text ever holds it.
NO_MERGES = "<|endoftext|> <|endoftext|>"

def tokenizer_metadata(tokenizer) -> dict:
    """tokens, token types, merges and the EOS id for `tokenizer.ggml.*`."""
    from tinylm.export.hf_tokenizer import hf_tokenizer

    if tokenizer.kind not in ("bytes", "bpe"):
        raise TinyLMError(f"a {tokenizer.kind} tokenizer is not exported to GGUF (llama.cpp's "
                          f"SentencePiece tokenizer would give other ids); use bytes or bpe")
    tok, eos, _ = hf_tokenizer(tokenizer)
    data = json.loads(tok.to_str())
    tokens = [tok.id_to_token(i) for i in range(tokenizer.vocab_size)]
    if any(t is None for t in tokens):
        raise TinyLMError("the tokenizer's ids are not contiguous; not exported to GGUF")
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    if not merges:  # the bytes tokenizer: see NO_MERGES
        merges = [NO_MERGES]
    # CONTROL for EOS, USER_DEFINED for the appended ChatML markers (llama.cpp matches those
    # in text as whole tokens, as tinylm does), NORMAL for the rest.
    appended = {tok.token_to_id(t) for t in tokenizer.specials}
    types = [3 if i == tokenizer.eos_id else 4 if i in appended else 1
             for i in range(len(tokens))]
    return {"tokens": tokens, "types": types, "merges": merges, "eos_id": tokenizer.eos_id,
            "eos": eos}


# --------------------------------------------------------------------------- writer

def export_gguf(checkpoint: str | Path, out: str | Path, dtype: str = "f32") -> dict:
    """Write the GGUF file of a checkpoint; returns what was done (for the CLI)."""
    import gguf

    from tinylm.export.hf import adapter_of
    from tinylm.models import get_family
    from tinylm.train.checkpoint import load_checkpoint

    if dtype not in ("f32", "f16"):
        raise TinyLMError(f"--dtype must be f32 or f16, got {dtype!r}")
    ckpt = load_checkpoint(checkpoint)
    family = ckpt.meta["family"]
    config = get_family(family).config_from(ckpt.meta["model_config"])
    hf_config, hf_tensors = adapter_of(family).to_hf(ckpt.model_state, config)
    if hf_config.get("model_type") != "llama":
        raise TinyLMError(f"a {family} model maps to {hf_config.get('model_type')}, not llama; "
                          f"GGUF export covers the llama architecture only")
    vocab = tokenizer_metadata(ckpt.tokenizer)
    tensors = gguf_tensors(hf_config, hf_tensors)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{temp_prefix(out)}gguf.tmp")  # gguf writes a path; renamed when whole
    writer = gguf.GGUFWriter(str(tmp), arch="llama")
    try:
        _write_metadata(writer, gguf, hf_config, vocab, ckpt.meta, dtype)
        for name, tensor in tensors.items():
            array = tensor.numpy()
            if dtype == "f16" and array.ndim == 2:
                array = array.astype(np.float16)
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as err:
        raise write_error(out, err) from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"out": out, "tensors": len(tensors), "tokenizer": ckpt.tokenizer.kind}


def _write_metadata(writer, gguf, hf: dict, vocab: dict, meta: dict, dtype: str) -> None:
    writer.add_name(f"tinylm {meta.get('preset') or meta['family']}")  # also our file marker
    writer.add_context_length(hf["max_position_embeddings"])
    writer.add_embedding_length(hf["hidden_size"])
    writer.add_block_count(hf["num_hidden_layers"])
    writer.add_feed_forward_length(hf["intermediate_size"])
    writer.add_head_count(hf["num_attention_heads"])
    writer.add_head_count_kv(hf["num_key_value_heads"])
    writer.add_rope_dimension_count(hf["head_dim"])
    writer.add_rope_freq_base(float(hf["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(hf["rms_norm_eps"]))
    writer.add_vocab_size(hf["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32"
                         else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    writer.add_eos_token_id(vocab["eos_id"])
    writer.add_bos_token_id(vocab["eos_id"])  # never added (below); llama.cpp wants an id
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
