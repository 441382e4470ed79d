"""The Llama-style model: exact parameter counts, KV cache equivalence, GQA, presets."""

import pytest
import torch

from tinylm.config import load_preset, preset_names
from tinylm.errors import TinyLMError
from tinylm.models import build_model, get_family
from tinylm.models.llama import Llama, LlamaConfig

SMALL = dict(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48,
             context_len=32)


def test_glint_shape_parameter_count():
    model = Llama(LlamaConfig(vocab_size=500))  # dim 128, 4 layers, 4/4 heads, SwiGLU 384
    per_layer = 3 * 128 * 128 + 128 * 128 + 3 * 128 * 384 + 2 * 128
    assert sum(p.numel() for p in model.parameters()) == 500 * 128 + 4 * per_layer + 128
    assert sum(model.parameter_breakdown().values()) == 917_120


def test_untied_head_adds_exactly_its_matrix():
    tied = Llama(LlamaConfig(**SMALL))
    untied = Llama(LlamaConfig(**SMALL, tie_embeddings=False))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(untied) - count(tied) == 50 * 32


@torch.no_grad()
def test_kv_cache_decoding_equals_full_forward():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(**SMALL)).eval()
    idx = torch.randint(0, 50, (3, 20))
    full = model(idx)
    cache = model.new_cache(3, 32)
    parts = [model(idx[:, :7], cache, 0), model(idx[:, 7:12], cache, 7)]
    parts += [model(idx[:, t:t + 1], cache, t) for t in range(12, 20)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_causal_future_tokens_do_not_change_the_past():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(**SMALL)).eval()
    idx = torch.randint(0, 50, (1, 24))
    other = idx.clone()
    other[:, 12:] = torch.randint(0, 50, (1, 12))
    assert torch.equal(model(idx)[:, :12], model(other)[:, :12])


@torch.no_grad()
def test_gqa_equals_mha_with_repeated_kv_heads():
    """A GQA model equals an MHA model whose key/value heads are copies of the shared ones."""
    torch.manual_seed(0)
    gqa = Llama(LlamaConfig(**SMALL)).eval()
    mha = Llama(LlamaConfig(**{**SMALL, "n_kv_heads": 4})).eval()
    state = gqa.state_dict()
    hd, q = 8, 4 * 8
    for i in range(2):
        w = state[f"layers.{i}.attn.wqkv.weight"]
        wq, wk, wv = w[:q], w[q:q + 2 * hd], w[q + 2 * hd:]
        expand = lambda m: m.view(2, hd, -1).repeat_interleave(2, dim=0).reshape(4 * hd, -1)  # noqa: E731
        state[f"layers.{i}.attn.wqkv.weight"] = torch.cat([wq, expand(wk), expand(wv)])
    mha.load_state_dict(state)
    idx = torch.randint(0, 50, (2, 16))
    torch.testing.assert_close(gqa(idx), mha(idx), rtol=1e-5, atol=1e-5)


def test_every_preset_builds():
    for name in preset_names():
        preset = load_preset(name)
        tok = preset.get("tokenizer", {"kind": "bytes"})
        vocab = 257 if tok["kind"] == "bytes" else tok["vocab_size"]
        language_model = get_family(preset["family"]).language_model  # qkvae: no vocabulary
        model = build_model(preset["family"],
                            {**preset["model"], **({"vocab_size": vocab} if language_model else {})})
        assert sum(model.parameter_breakdown().values()) == sum(
            p.numel() for p in model.parameters())


def test_bad_configs_are_clear():
    with pytest.raises(TinyLMError, match="not divisible"):
        build_model("llama", {**SMALL, "dim": 30})
    with pytest.raises(TinyLMError, match="unknown setting"):
        build_model("llama", {**SMALL, "layers": 3})
    with pytest.raises(TinyLMError, match="unknown model family"):
        build_model("gpt", SMALL)
    with pytest.raises(ValueError, match="context length"):
        Llama(LlamaConfig(**SMALL))(torch.zeros(1, 33, dtype=torch.long))
