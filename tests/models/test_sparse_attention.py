"""Block-sparse attention: equivalence with dense SDPA at full coverage, agreement with the
dense-mask reference when sparse, causality, and the wiring into a Llama model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from tinylm.models.llama import Llama, LlamaConfig
from tinylm.models.sparse_attention import (BlockSparseConfig, block_sparse_attention,
                                            block_sparse_attention_reference,
                                            disable_block_sparse, enable_block_sparse)

FULL = BlockSparseConfig(block_size=8, top_k=1000, window=4)  # every block: dense causal
SPARSE_CONFIGS = [
    BlockSparseConfig(),  # the Blink-1 card: block 32, top-2, window 16 (window < block)
    BlockSparseConfig(block_size=8, top_k=2, window=4),
    BlockSparseConfig(block_size=4, top_k=1, window=9),  # window spans several blocks
    BlockSparseConfig(block_size=8, top_k=0, window=5),  # sliding window only
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: on a busy 2-core box, a second thread only adds barrier stalls
    (measured: 5 s one-threaded, 20-30 s two-threaded under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def qkv(q_len: int, k_len: int, seed: int = 0, dim: int = 16, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    shapes = ((2, 3, q_len, dim), (2, 3, k_len, dim), (2, 3, k_len, dim))
    return [torch.randn(s, generator=g).requires_grad_(requires_grad) for s in shapes]


def dense(q, k, v, pos):
    """Dense causal attention for queries at [pos, pos + Tq), spelled out with a mask."""
    mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril(diagonal=pos)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# --------------------------------------------------------------------------- config

@pytest.mark.parametrize("kwargs", [dict(block_size=0), dict(top_k=-1), dict(window=0),
                                    dict(block_size=2.5), dict(window=True)])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        BlockSparseConfig(**kwargs)


def test_config_defaults_are_the_blink_card():
    assert BlockSparseConfig() == BlockSparseConfig(block_size=32, top_k=2, window=16)


# --------------------------------------------------------------------------- equivalence

KERNELS = ["gather", "mask"]  # two ways to compute the same pattern: both are tested


@pytest.mark.parametrize("length", [1, 7, 8, 45, 100])
@pytest.mark.parametrize("chunk_size, kernel", [(None, "gather"), (7, "gather"), (None, "mask")])
def test_full_coverage_is_dense_attention_in_training(length, chunk_size, kernel):
    q, k, v = qkv(length, length)
    out = block_sparse_attention(q, k, v, 0, FULL, chunk_size=chunk_size, kernel=kernel)
    assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("length", [2, 9, 33, 100])
@pytest.mark.parametrize("kernel", KERNELS)
def test_full_coverage_is_dense_attention_in_decode(length, kernel):
    q, k, v = qkv(1, length)
    out = block_sparse_attention(q, k, v, length - 1, FULL, kernel=kernel)
    assert_close(out, F.scaled_dot_product_attention(q, k, v))  # one query sees every key


@pytest.mark.parametrize("pos, q_len", [(1, 5), (13, 20), (40, 33), (64, 17)])
def test_full_coverage_is_dense_attention_in_chunked_prefill(pos, q_len):
    q, k, v = qkv(q_len, pos + q_len)
    out = block_sparse_attention(q, k, v, pos, FULL, chunk_size=6)
    assert_close(out, dense(q, k, v, pos))
    assert_close(block_sparse_attention(q, k, v, pos, FULL, kernel="mask"), dense(q, k, v, pos))


@pytest.mark.parametrize("config", SPARSE_CONFIGS, ids=repr)
@pytest.mark.parametrize("pos, q_len", [(0, 1), (0, 70), (0, 150), (99, 1), (60, 45)])
def test_sparse_matches_dense_mask_reference(config, pos, q_len):
    q, k, v = qkv(q_len, pos + q_len, seed=pos + q_len)
    expected = block_sparse_attention_reference(q, k, v, pos, config)
    for chunk_size, kernel in ((None, "gather"), (11, "gather"), (None, "mask")):
        assert_close(block_sparse_attention(q, k, v, pos, config, chunk_size, kernel), expected)


def test_sparse_differs_from_dense_when_it_should():
    """Guard against a pattern that quietly degenerates to dense attention."""
    q, k, v = qkv(150, 150)
    out = block_sparse_attention(q, k, v, 0, SPARSE_CONFIGS[1])
    assert_close(out, block_sparse_attention(q, k, v, 0, SPARSE_CONFIGS[1], kernel="gather"))
    dense_out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert_close(out[:, :, :13], dense_out[:, :, :13])  # few enough blocks: all chosen
    assert (out[:, :, 100:] - dense_out[:, :, 100:]).abs().max() > 1e-2


def test_rejects_too_few_keys():
    q, k, v = qkv(4, 6)
    with pytest.raises(ValueError, match="keys"):
        block_sparse_attention(q, k, v, 3, BlockSparseConfig())


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradients_match_dense_mask_reference(kernel):
    """Autograd through the gathers and windows (or the mask) gives the masked-dense
    gradients."""
    config = SPARSE_CONFIGS[1]
    q, k, v = qkv(70, 70, requires_grad=True)
    weights = torch.randn(q.shape, generator=torch.Generator().manual_seed(3))
    chunk = 9 if kernel == "gather" else None
    out = block_sparse_attention(q, k, v, 0, config, chunk, kernel)
    ours = torch.autograd.grad((out * weights).sum(), (q, k, v))
    theirs = torch.autograd.grad(
        (block_sparse_attention_reference(q, k, v, 0, config) * weights).sum(), (q, k, v))
    for a, b in zip(ours, theirs, strict=True):
        assert_close(a, b)


# --------------------------------------------------------------------------- causality

@pytest.mark.parametrize("config", SPARSE_CONFIGS[1:3], ids=repr)
@pytest.mark.parametrize("kernel", KERNELS)
def test_no_gradient_flows_from_future_keys_or_values(config, kernel):
    length = 40
    q, k, v = qkv(length, length, requires_grad=True)
    out = block_sparse_attention(q, k, v, 0, config, 9 if kernel == "gather" else None, kernel)
    for i in range(length):
        grad_k, grad_v = torch.autograd.grad(out[:, :, i].sum(), (k, v), retain_graph=True)
        assert torch.all(grad_k[:, :, i + 1:] == 0) and torch.all(grad_v[:, :, i + 1:] == 0)
        assert grad_v[:, :, i].abs().sum() > 0  # the query's own key is always attended


@pytest.mark.parametrize("config", SPARSE_CONFIGS, ids=repr)
@pytest.mark.parametrize("pos, q_len, cut", [(0, 150, 77), (0, 150, 1), (50, 60, 23)])
@pytest.mark.parametrize("kernel", KERNELS)
def test_future_changes_leave_earlier_outputs_bit_identical(config, pos, q_len, cut, kernel):
    """Queries [0, cut) must not notice any change to later queries, keys or values."""
    q, k, v = qkv(q_len, pos + q_len)
    out = block_sparse_attention(q, k, v, pos, config, kernel=kernel)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, :, cut:] = torch.randn_like(q2[:, :, cut:]) * 10
    k2[:, :, pos + cut:] = torch.randn_like(k2[:, :, pos + cut:]) * 10
    v2[:, :, pos + cut:] = torch.randn_like(v2[:, :, pos + cut:]) * 10
    out2 = block_sparse_attention(q2, k2, v2, pos, config, kernel=kernel)
    assert torch.equal(out[:, :, :cut], out2[:, :, :cut])
    assert not torch.equal(out[:, :, cut:], out2[:, :, cut:])


# --------------------------------------------------------------------------- model wiring

def tiny_llama() -> Llama:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         ffn_hidden=64, context_len=128)
    return Llama(config).eval()


def test_enable_and_disable_cover_every_attention_layer():
    model = tiny_llama()
    assert enable_block_sparse(model, FULL) == 2
    assert all(block.attn.attention_fn is not None for block in model.layers)
    assert disable_block_sparse(model) == 2
    assert all(block.attn.attention_fn is None for block in model.layers)
    with pytest.raises(ValueError, match="no CausalSelfAttention"):
        enable_block_sparse(torch.nn.Linear(2, 2), FULL)


@torch.no_grad()
def test_full_coverage_model_matches_dense_model():
    model = tiny_llama()
    idx = torch.randint(0, 64, (2, 100), generator=torch.Generator().manual_seed(1))
    dense_logits = model(idx)
    enable_block_sparse(model, FULL)
    assert_close(model(idx), dense_logits)


@torch.no_grad()
def test_sparse_model_decode_and_chunked_prefill_match_full_forward():
    model = tiny_llama()
    enable_block_sparse(model, BlockSparseConfig(block_size=8, top_k=2, window=4))
    idx = torch.randint(0, 64, (2, 120), generator=torch.Generator().manual_seed(2))
    full = model(idx)
    n = 90
    cache = model.new_cache(2, 120)
    assert_close(model(idx[:, :n], cache, 0), full[:, :n])
    assert_close(model(idx[:, n:n + 1], cache, n), full[:, n:n + 1])  # one decode step
    assert_close(model(idx[:, n + 1:], cache, n + 1), full[:, n + 1:])  # a chunk after it
    # the sparse model really is sparse at this length
    disable_block_sparse(model)
    assert (model(idx)[:, n:] - full[:, n:]).abs().max() > 1e-4
