"""`tinylm export gguf`: the file reads back with the `gguf` package (llama.cpp's gguf-py) with
llama.cpp's tensor names and shapes, tinylm's values (q/k rows permuted so that llama.cpp's
interleaved RoPE computes tinylm's half-split RoPE), the llama hyperparameters and the
tokenizer's vocabulary; unsupported inputs get one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from tests.export.test_hf import story, trained_checkpoint
from tinylm.errors import TinyLMError
from tinylm.export.gguf import NO_MERGES, export_gguf, interleave_rope_rows
from tinylm.export.hf_tokenizer import hf_tokenizer
from tinylm.io import check_output
from tinylm.models.common import apply_rope, rope_tables
from tinylm.tokenizers import BPETokenizer, ByteTokenizer, UnigramTokenizer
from tinylm.train.checkpoint import load_checkpoint

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module", params=["bytes", "bpe"])
def exported(request, tmp_path_factory, data_dir):
    """(checkpoint, GGUF file): bytes tied, MHA; BPE untied, GQA 4/2, rope base 500."""
    folder = tmp_path_factory.mktemp(f"gguf-{request.param}")
    if request.param == "bytes":
        ckpt = trained_checkpoint(folder / "ckpt", ByteTokenizer(), story(data_dir, 4000),
                                  steps=2, n_kv_heads=4)
    else:
        tokenizer = BPETokenizer.train([story(data_dir, 100_000)], 320)
        ckpt = trained_checkpoint(folder / "ckpt", tokenizer, story(data_dir, 8000), steps=2,
                                  tie_embeddings=False, rope_base=500.0)
    export_gguf(ckpt, folder / "model.gguf")
    return ckpt, folder / "model.gguf"


def field(reader, key):
    return reader.fields[key].contents()


def test_tensors_read_back_with_llama_cpp_names_shapes_and_values(exported):
    ckpt, path = exported
    c = load_checkpoint(ckpt)
    config, state = c.meta["model_config"], c.model_state
    reader = gguf.GGUFReader(path)
    got = {t.name: t for t in reader.tensors}
    q_rows = config["n_heads"] * config["dim"] // config["n_heads"]
    kv_rows = config["n_kv_heads"] * config["dim"] // config["n_heads"]
    expected = {"token_embd.weight": state["tok_emb.weight"],
                "output_norm.weight": state["norm.weight"]}
    if not config.get("tie_embeddings", True):
        expected["output.weight"] = state["lm_head.weight"]
    for i in range(config["n_layers"]):
        q, k, v = state[f"layers.{i}.attn.wqkv.weight"].split([q_rows, kv_rows, kv_rows])
        gate, up = state[f"layers.{i}.mlp.w13.weight"].chunk(2)
        expected.update({
            f"blk.{i}.attn_norm.weight": state[f"layers.{i}.attn_norm.weight"],
            f"blk.{i}.attn_q.weight": interleave_rope_rows(q, config["n_heads"]),
            f"blk.{i}.attn_k.weight": interleave_rope_rows(k, config["n_kv_heads"]),
            f"blk.{i}.attn_v.weight": v, f"blk.{i}.attn_output.weight":
            state[f"layers.{i}.attn.wo.weight"],
            f"blk.{i}.ffn_norm.weight": state[f"layers.{i}.mlp_norm.weight"],
            f"blk.{i}.ffn_gate.weight": gate, f"blk.{i}.ffn_up.weight": up,
            f"blk.{i}.ffn_down.weight": state[f"layers.{i}.mlp.w2.weight"]})
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert list(got[name].shape) == list(reversed(tensor.shape)), name  # ggml order
        assert np.array_equal(got[name].data, tensor.numpy()), name


def test_metadata_and_tokenizer(exported):
    ckpt, path = exported
    c = load_checkpoint(ckpt)
    config = c.meta["model_config"]
    reader = gguf.GGUFReader(path)
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "llama.context_length") == config["context_len"]
    assert field(reader, "llama.embedding_length") == config["dim"]
    assert field(reader, "llama.block_count") == config["n_layers"]
    assert field(reader, "llama.feed_forward_length") == config["ffn_hidden"]
    assert field(reader, "llama.attention.head_count") == config["n_heads"]
    assert field(reader, "llama.attention.head_count_kv") == config["n_kv_heads"]
    assert field(reader, "llama.rope.freq_base") == pytest.approx(config.get("rope_base", 1e4))
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"
    tok, eos, _ = hf_tokenizer(c.tokenizer)
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert tokens == [tok.id_to_token(i) for i in range(c.tokenizer.vocab_size)]
    assert tokens[c.tokenizer.eos_id] == eos == "<|endoftext|>"
    assert field(reader, "tokenizer.ggml.eos_token_id") == c.tokenizer.eos_id
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    types = field(reader, "tokenizer.ggml.token_type")
    assert types[c.tokenizer.eos_id] == 3 and types.count(3) == 1  # EOS alone is CONTROL
    merges = field(reader, "tokenizer.ggml.merges")
    if c.tokenizer.kind == "bytes":
        assert merges == [NO_MERGES] and tokens[:256] == [tok.id_to_token(b) for b in range(256)]
    else:
        assert len(merges) == c.tokenizer.vocab_size - 257  # one merge per learned token


def test_permuted_rows_make_interleaved_rope_equal_half_split_rope():
    """What the q/k permutation is for: llama.cpp rotates pairs (2i, 2i+1) of each head, tinylm
    and HF rotate (i, i + D/2); on permuted rows the first gives the second, permuted."""
    heads, head_dim, dim, length = 3, 8, 12, 5
    weight = torch.randn(heads * head_dim, dim)
    x = torch.randn(length, dim)
    cos, sin = rope_tables(head_dim, length, 500.0)
    ours = apply_rope((x @ weight.t()).view(length, heads, head_dim).transpose(0, 1), cos, sin)
    pairs = (x @ interleave_rope_rows(weight, heads).t()).view(length, heads, head_dim // 2, 2)
    c, s = cos[:, None], sin[:, None]
    theirs = torch.stack([pairs[..., 0] * c - pairs[..., 1] * s,
                          pairs[..., 0] * s + pairs[..., 1] * c], -1)  # (T, H, D/2, 2)
    back = theirs.transpose(-1, -2).reshape(length, heads, head_dim).transpose(0, 1)
    torch.testing.assert_close(back, ours)


def test_f16_keeps_norms_f32(exported, tmp_path):
    ckpt, _ = exported
    export_gguf(ckpt, tmp_path / "half.gguf", dtype="f16")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(tmp_path / "half.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.F16
    assert types["output_norm.weight"] == gguf.GGMLQuantizationType.F32


def test_unsupported_inputs_get_one_line(tmp_path, data_dir):
    ckpt = trained_checkpoint(tmp_path / "bytes", ByteTokenizer(), story(data_dir, 3000), steps=1)
    unigram = UnigramTokenizer.train([story(data_dir, 50_000)], 96)
    other = trained_checkpoint(tmp_path / "unigram", unigram, story(data_dir, 3000), steps=1)
    with pytest.raises(TinyLMError, match="unigram tokenizer is not exported to GGUF"):
        export_gguf(other, tmp_path / "u.gguf")
    (tmp_path / "theirs.gguf").write_bytes(b"GGUF someone else's file")
    proc = run_cli("export", "gguf", str(ckpt), "-o", str(tmp_path / "theirs.gguf"), check=False)
    assert proc.returncode == 2 and "was not written by tinylm" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "theirs.gguf").read_bytes() == b"GGUF someone else's file"
    export_gguf(ckpt, tmp_path / "ours.gguf")
    check_output(tmp_path / "ours.gguf", "file")  # our own file may be replaced: it is marked
