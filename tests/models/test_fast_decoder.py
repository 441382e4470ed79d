"""Llama's FastDecoder: the same function as forward, when it applies, and kept up to date."""

import pytest
import torch

import tinylm.infer.generate as generate_module
from tinylm.infer.generate import generate_ids
from tinylm.infer.sampling import SamplingConfig
from tinylm.models.llama import Llama, LlamaConfig

GQA = dict(vocab_size=40, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48,
           context_len=16)


def lively(config: LlamaConfig, seed: int = 0) -> Llama:
    """A model with large random weights, so rounding differences would show."""
    torch.manual_seed(seed)
    model = Llama(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("config", [GQA, dict(GQA, n_kv_heads=4, tie_embeddings=False),
                                    dict(GQA, n_kv_heads=1)])
@pytest.mark.parametrize("batch", [1, 3])
@torch.inference_mode()
def test_steps_equal_forward_through_the_whole_context(config, batch):
    model = lively(LlamaConfig(**config))
    ids = torch.randint(0, 40, (batch, 16))
    fast_cache, ref_cache = model.new_cache(batch), model.new_cache(batch)
    model(ids[:, :3], fast_cache, 0)
    model(ids[:, :3], ref_cache, 0)
    decoder = model.fast_decoder()
    for pos in range(3, 16):
        got = decoder.step(ids[:, pos], fast_cache, pos)
        want = model(ids[:, pos:pos + 1], ref_cache, pos)[:, -1]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    torch.testing.assert_close(fast_cache.k, ref_cache.k, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_cache.v, ref_cache.v, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="KV cache holds"):
        decoder.step(ids[:, 0], fast_cache, 16)


def test_decoder_is_kept_until_the_weights_change():
    model = lively(LlamaConfig(**GQA))
    first = model.fast_decoder()
    assert model.fast_decoder() is first
    with torch.no_grad():
        model.layers[0].mlp.w2.weight.mul_(2.0)  # as an optimizer step would
    second = model.fast_decoder()
    assert second is not first
    model.load_state_dict(lively(LlamaConfig(**GQA), seed=1).state_dict())
    assert model.fast_decoder() is not second
    assert "_fast_decoder" not in model.state_dict()


def test_no_fast_path_where_it_would_skip_something():
    class Subclass(Llama):
        pass

    assert Subclass(LlamaConfig(**GQA)).fast_decoder() is None
    assert Llama(LlamaConfig(**GQA, think_steps=1)).fast_decoder() is None
    hooked = Llama(LlamaConfig(**GQA))
    hooked.layers[1].mlp.register_forward_hook(lambda module, args, out: out * 2)
    assert hooked.fast_decoder() is None
    custom = Llama(LlamaConfig(**GQA))
    custom.layers[0].attn.attention_fn = lambda q, k, v, pos: q
    assert custom.fast_decoder() is None
    adapted = Llama(LlamaConfig(**GQA))
    adapted.layers[0].attn.wo = torch.nn.Sequential(torch.nn.Linear(32, 32, bias=False))
    assert adapted.fast_decoder() is None


@pytest.mark.parametrize("sampling", [SamplingConfig(temperature=0),
                                      SamplingConfig(temperature=1.0, top_k=10, top_p=0.9,
                                                     repetition_penalty=1.3)])
def test_generation_is_the_same_with_and_without_the_fast_path(monkeypatch, sampling):
    model = lively(LlamaConfig(**GQA))
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    fast = generate_ids(model, prompts, 40, sampling, seed=5)  # 40 > context: rebuilds too
    monkeypatch.setattr(Llama, "fast_decoder", lambda self: None)
    slow = generate_ids(model, prompts, 40, sampling, seed=5)
    assert fast == slow and all(len(row) == 40 for row in fast)
    assert generate_module.generate_ids is generate_ids
