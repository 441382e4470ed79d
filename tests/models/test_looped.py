"""The looped family: exact preset sizes, loop overrides, per-loop LoRA, KV cache, continuous
thinking, checkpoints, and a short real training run of Blink-1."""

import math
from dataclasses import asdict

import pytest
import torch
from torch import nn

from tinylm.config import load_preset
from tinylm.errors import TinyLMError
from tinylm.models import build_model
from tinylm.models.llama import Llama, LlamaConfig
from tinylm.models.looped import Looped, LoopedConfig
from tinylm.models.lora import LoopLoRALinear

# every feature at once, small: factorized embedding, prelude/coda, GQA, LoRA on all targets
SMALL = dict(vocab_size=61, dim=16, n_heads=4, n_kv_heads=2, ffn_hidden=24, context_len=48,
             emb_dim=8, n_prelude=1, n_coda=1, loops=2, max_loops=5, lora_rank=2,
             lora_targets=["wqkv", "wo", "w13", "w2"])
# Blink's shape (dim 3, one head: odd head_dim, partial rotary), dense attention
BLINK = dict(vocab_size=257, dim=3, n_heads=1, n_kv_heads=1, ffn_hidden=6, context_len=48,
             rope_base=1e7, loops=2, max_loops=8, lora_rank=2, lora_targets=["wqkv"])


def preset_model(name: str) -> Looped:
    preset = load_preset(name)
    tok = preset["tokenizer"]
    vocab = 257 if tok["kind"] == "bytes" else tok["vocab_size"]
    return build_model(preset["family"], {**preset["model"], "vocab_size": vocab})


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_adapters(model: Looped, seed: int = 0) -> Looped:
    """Fresh adapters are exact no-ops; give them values so that tests can see them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.adapters:
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.3)
        model.loop_emb.weight.copy_(torch.randn(model.loop_emb.weight.shape, generator=gen) * 0.3)
        if model.think_gate is not None:
            model.think_gate.copy_(torch.rand(model.think_gate.shape, generator=gen) + 0.5)
    return model.eval()


# --------------------------------------------------------------------------- sizes

def test_blink_has_the_parameters_its_docstring_lists():
    model = preset_model("blink-1")
    block = 3 + 9 * 3 + 3 * 3 + 3 + 12 * 3 + 3 * 6  # norms, wqkv, wo, norm, w13, w2
    lora = 8 * (2 * 3 + 9 * 2)  # 8 loops x rank-2 (A: 2x3, B: 9x2) on wqkv
    expected = 257 * 3 + block + lora + 8 * 3 + 3  # + loop embeddings + final norm
    assert expected == 1086 == n_params(model) == sum(model.parameter_breakdown().values())
    assert model.config.sparse_attention == {"block_size": 32, "top_k": 2, "window": 16}


@pytest.mark.parametrize("name, count", [("looped-1m", 983_424), ("shard-50m", 49_903_488)])
def test_preset_parameter_counts(name, count):
    model = preset_model(name)
    assert n_params(model) == count == sum(model.parameter_breakdown().values())


def test_shard_shape_matches_the_blog():
    c = preset_model("shard-50m").config
    assert (c.emb_dim, c.n_prelude, c.n_coda, c.max_loops, c.lora_rank) == (128, 4, 4, 16, 8)


# --------------------------------------------------------------------------- loops

@torch.no_grad()
def test_loop_count_override():
    torch.manual_seed(0)
    model = randomize_adapters(Looped(LoopedConfig(**SMALL)))
    idx = torch.randint(0, 61, (2, 10))
    trained = model(idx)
    more = model(idx, loops=5)  # up to max_loops, more than trained
    assert not torch.allclose(trained, more)
    model.set_loops(5)
    torch.testing.assert_close(model(idx), more)
    assert model.new_cache(1).k.shape[0] == 1 + 5 + 1
    with pytest.raises(ValueError, match=r"max_loops"):
        model.set_loops(6)
    with pytest.raises(ValueError, match=r"max_loops"):
        model(idx, loops=6)
    with pytest.raises(ValueError, match=r"new_cache"):  # a cache sized for other loops
        model(idx, model.new_cache(2, loops=2), 0, loops=3)
    with pytest.raises(TinyLMError, match="exceeds max_loops"):
        build_model("looped", {**SMALL, "loops": 6})


@torch.no_grad()
def test_fresh_lora_equals_the_model_without_lora():
    torch.manual_seed(0)
    plain = Looped(LoopedConfig(**{**SMALL, "lora_rank": 0}))
    lora = Looped(LoopedConfig(**SMALL))
    missing, unexpected = lora.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".lora_" in name for name in missing)
    idx = torch.randint(0, 61, (2, 12))
    for loops in (2, 4):
        torch.testing.assert_close(lora(idx, loops=loops), plain(idx, loops=loops),
                                   rtol=0, atol=0)
    # and the adapters are really applied once B is non-zero (each loop its own)
    randomize_adapters(lora)
    plain.loop_emb.weight.copy_(lora.loop_emb.weight)
    assert not torch.allclose(lora(idx), plain(idx))


def test_lora_layers_share_the_base_weight():
    model = Looped(LoopedConfig(**SMALL))
    wqkv = model.shared.attn.wqkv
    assert isinstance(wqkv, LoopLoRALinear)
    assert wqkv.lora_A.shape == (5, 2, 16) and wqkv.lora_B.shape == (5, 32, 2)  # q 16, k 8, v 8
    assert "shared.attn.wqkv.weight" in model.state_dict()
    with pytest.raises(TinyLMError, match="unknown lora_targets"):
        build_model("looped", {**SMALL, "lora_targets": ["wq"]})


def test_parameter_groups():
    group = Looped.parameter_group
    assert group("shared.attn.wqkv.lora_A") == "loop_adapters"
    assert group("shared.mlp.w2.lora_B") == "loop_adapters"
    assert group("loop_emb.weight") == "loop_adapters"
    assert group("tok_emb.weight") == group("emb_proj.weight") == "embeddings"
    assert group("shared.attn.wqkv.weight") == group("prelude.0.attn.wo.weight") == "attention"
    assert group("coda.0.mlp.w13.weight") == "mlp"
    assert group("shared.attn_norm.weight") == group("norm.weight") == "norms"
    model = Looped(LoopedConfig(**SMALL))
    groups = {group(name) for name, _ in model.named_parameters()}
    assert groups == {"loop_adapters", "embeddings", "attention", "mlp", "norms"}


# --------------------------------------------------------------------------- KV cache

def decode_in_pieces(model, idx, loops=None):
    """A prompt of 7, a chunk of 4 after it, then one token at a time, all through the cache."""
    kw = {} if loops is None else {"loops": loops}
    cache = model.new_cache(idx.shape[0], **kw)
    parts = [model(idx[:, :7], cache, 0, **kw), model(idx[:, 7:11], cache, 7, **kw)]
    parts += [model(idx[:, t:t + 1], cache, t, **kw) for t in range(11, idx.shape[1])]
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("config", [SMALL, BLINK], ids=["small", "blink"])
@pytest.mark.parametrize("think", [0, 2])
@torch.no_grad()
def test_kv_cache_decoding_equals_full_forward(config, think):
    torch.manual_seed(0)
    model = randomize_adapters(Looped(LoopedConfig(**config, think_steps=think)))
    idx = torch.randint(0, config["vocab_size"], (2, 20))
    for loops in (None, 4):  # as trained, and more loops than trained
        torch.testing.assert_close(decode_in_pieces(model, idx, loops), model(idx, loops=loops),
                                   rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_llama_kv_cache_with_thinking():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                              ffn_hidden=48, context_len=32, think_steps=2)).eval()
    model.think_gate.fill_(1.0)
    idx = torch.randint(0, 50, (2, 20))
    assert model.new_cache(2).k.shape[0] == 2 * 3
    torch.testing.assert_close(decode_in_pieces(model, idx), model(idx), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- thinking

@torch.no_grad()
def test_think_steps_zero_is_the_plain_model_and_k_adds_gated_passes():
    torch.manual_seed(0)
    model = randomize_adapters(Looped(LoopedConfig(**SMALL)))
    thinker = Looped(LoopedConfig(**SMALL, think_steps=2)).eval()
    missing, _ = thinker.load_state_dict(model.state_dict(), strict=False)
    assert missing == ["think_gate"]  # thinking adds one scalar per step, nothing else
    idx = torch.randint(0, 61, (2, 12))
    cos, sin = model.rope_cos[:12], model.rope_sin[:12]
    tokens = model.embed(idx)

    def one_pass(x):
        return model.norm(model.trunk(x, cos, sin, None, 0, 0, model.loops))

    hidden = one_pass(tokens)
    torch.testing.assert_close(model(idx), model.head(hidden))  # think_steps=0: plain
    torch.testing.assert_close(thinker(idx), model(idx), rtol=0, atol=0)  # gates at 0: plain
    thinker.think_gate.copy_(torch.tensor([0.7, -1.3]))
    for gate in (0.7, -1.3):  # each thought: the last hidden state, gated, beside the tokens
        hidden = one_pass(tokens + gate * hidden)
    torch.testing.assert_close(thinker(idx), model.head(hidden))


@torch.no_grad()
def test_llama_think_steps_zero_is_the_plain_forward():
    torch.manual_seed(0)
    config = dict(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=4, ffn_hidden=48,
                  context_len=32)
    model = Llama(LlamaConfig(**config)).eval()
    idx = torch.randint(0, 50, (2, 12))
    x = model.tok_emb(idx)
    for block in model.layers:
        x = block(x, model.rope_cos[:12], model.rope_sin[:12])
    torch.testing.assert_close(model(idx), model.head(model.norm(x)))
    thinker = Llama(LlamaConfig(**config, think_steps=1)).eval()
    thinker.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(thinker(idx), model(idx), rtol=0, atol=0)
    thinker.think_gate.fill_(1.0)
    assert not torch.allclose(thinker(idx), model(idx))


def causal_check(model, vocab):
    """Logits at positions < 10 must not change when tokens at >= 10 do."""
    idx = torch.randint(0, vocab, (2, 24))
    other = idx.clone()
    other[:, 10:] = torch.randint(0, vocab, (2, 14))
    a, b = model(idx), model(other)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=0)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@torch.no_grad()
def test_thinking_is_causal():
    torch.manual_seed(0)
    causal_check(randomize_adapters(Looped(LoopedConfig(**SMALL, think_steps=3))), 61)
    llama = Llama(LlamaConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=4,
                              ffn_hidden=48, context_len=32, think_steps=3)).eval()
    llama.think_gate.fill_(1.0)
    causal_check(llama, 50)


@torch.no_grad()
def test_blink_block_sparse_attention_is_causal_and_cached():
    torch.manual_seed(0)
    sparse = {"block_size": 4, "top_k": 1, "window": 3}  # small, so 24 tokens route blocks
    model = randomize_adapters(Looped(LoopedConfig(**BLINK, sparse_attention=sparse,
                                                   think_steps=1)))
    assert model.shared.attn.attention_fn is not None
    causal_check(model, 257)
    idx = torch.randint(0, 257, (2, 20))
    torch.testing.assert_close(decode_in_pieces(model, idx), model(idx), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- blink end to end

def test_blink_checkpoint_round_trip(tmp_path):
    from tinylm.tokenizers import ByteTokenizer
    from tinylm.train.checkpoint import load_checkpoint, save_checkpoint

    model = randomize_adapters(preset_model("blink-1"))
    path = save_checkpoint(tmp_path / "blink", family="looped",
                           model_config=asdict(model.config), model_state=model.state_dict(),
                           tokenizer=ByteTokenizer())
    ckpt = load_checkpoint(path)
    again = ckpt.build_model()
    assert ckpt.meta["family"] == "looped" and again.config == model.config
    idx = torch.randint(0, 257, (1, 40))
    with torch.no_grad():
        torch.testing.assert_close(again(idx), model(idx), rtol=0, atol=0)
    assert (path / "model.safetensors").stat().st_size < 13_000  # the card's ~13 KB pickle


def test_blink_trains_below_8_bits_per_byte_resumes_and_generates(tmp_path, data_dir):
    import tinylm
    from tinylm.train.checkpoint import load_checkpoint
    from tinylm.train.session import new_run, resume_run

    out = tmp_path / "blink"
    flags = {"steps": 150, "batch_size": 32, "seq_len": 128, "eval_every": 0,
             "ckpt_every": 100, "threads": 1}
    new_run("blink-1", "tinystories", data_dir, out, {**flags, "steps": 100}, progress=False)
    last = resume_run(out, {"steps": 150}, progress=False)
    val_bits = load_checkpoint(last).meta["metrics"]["val_loss"] / math.log(2)
    assert val_bits < 7.0, f"val loss {val_bits:.2f} bits/byte after 150 steps"
    text = tinylm.load(last).generate("Once", max_new_tokens=20, seed=0)
    assert isinstance(text, str)


def test_blink_evaluates_and_merges_through_the_same_commands(tmp_path, data_dir):
    """`tinylm eval` and `tinylm merge` take looped checkpoints as they take llama ones; the
    per-loop adapters are a group of their own (`--t-group loop_adapters=T`)."""
    import json

    from safetensors.torch import load_file

    from tests.conftest import run_cli
    from tinylm.train.checkpoint import list_checkpoints

    run = tmp_path / "blink"
    run_cli("train", "--preset", "blink-1", "--data", "tinystories", "--steps", "40",
            "--batch-size", "8", "--seq-len", "64", "--ckpt-every", "20", "--eval-every", "0",
            "--out", str(run), "--no-progress")
    first, last = list_checkpoints(run / "checkpoints")[-2:]
    out = tmp_path / "report.json"
    run_cli("eval", str(last), "--limit", "2", "--cache-dir", str(tmp_path / "cache"),
            "--data-dir", str(data_dir), "-o", str(out))
    report = json.loads(out.read_text())
    assert all(r["status"] == "ok" for r in report["benchmarks"].values())
    assert report["summary"]["composite"] > 0

    merged = tmp_path / "merged"
    run_cli("merge", str(first), str(last), "--t", "0.5", "--t-group", "loop_adapters=0",
            "-o", str(merged))
    a, b = load_file(first / "model.safetensors"), load_file(last / "model.safetensors")
    m = load_file(merged / "model.safetensors")
    per_loop = [k for k in m if "lora" in k or k.startswith("loop_emb")]
    assert per_loop and all(torch.equal(m[k], a[k]) for k in per_loop)  # t = 0 for them
    moved = [k for k in m if k not in per_loop and not torch.equal(a[k], b[k])]
    assert moved and all(not torch.equal(m[k], a[k]) for k in moved)
    proc = run_cli("generate", str(merged), "--prompt", "Once", "-n", "10", "--seed", "0")
    assert proc.stdout.strip()
