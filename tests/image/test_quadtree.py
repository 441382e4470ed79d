"""Quadtree merging and the token stream: the count never exceeds the full grid, never grows
with tau, flat pictures collapse, and a stream decodes to exactly the reported image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.errors import TinyLMError
from tinylm.image.codec import Codec
from tinylm.image.quadtree import (
    Header,
    analyse,
    merged_grid,
    read_stream,
    tau_for_budget,
    token_count,
    write_stream,
)
from tinylm.models.fsq import FSQ

FSQ_ = FSQ((8, 5, 5, 5))


def fake_tree(latent: torch.Tensor, factor: int = 2):
    """A tree from a stand-in decoder (codes upsampled to pixels): fast, and exact enough to
    exercise every branch of the merging."""
    def decode(q):
        return F.interpolate(q[:, :3], scale_factor=factor, mode="nearest") * 0.5 + 0.5

    reference = decode(FSQ_.quantize_values(latent))
    return analyse(latent, FSQ_, decode, reference, factor)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 23), w=st.integers(1, 23), seed=st.integers(0, 10_000),
       smooth=st.booleans(), taus=st.lists(st.floats(0, 300), min_size=2, max_size=4))
def test_tokens_never_exceed_full_grid_and_fall_with_tau(h, w, seed, smooth, taus):
    g = torch.Generator().manual_seed(seed)
    latent = FSQ_.bound(torch.randn(1, 4, h, w, generator=g) * 2)
    if smooth:  # piecewise-flat regions, as in real pictures
        latent = FSQ_.bound(torch.randn(1, 4, 1, 1, generator=g) * 2).expand(1, 4, h, w).clone()
        latent[..., : h // 2, : w // 3] = 0.3
    tree = fake_tree(latent)
    counts = [token_count(tree, t) for t in sorted(taus)]
    assert all(1 <= c <= h * w for c in counts)
    assert counts == sorted(counts, reverse=True)
    header = Header(2 * h, 2 * w, False, 2, FSQ_.levels)
    for tau in taus:
        stream = write_stream(header, tree, tau)
        got_header, grid, tokens = read_stream(stream.data)
        assert tokens == stream.tokens == token_count(tree, tau)
        assert np.array_equal(grid, merged_grid(tree, tau))
        assert got_header == header
    budget = max(1, int(0.8 * h * w))
    tau = tau_for_budget(tree, budget)
    assert token_count(tree, tau) <= budget or tau == max(
        float(c[np.isfinite(c)].max()) for c in tree.costs)


def test_flat_latent_collapses_to_one_token_at_tau_zero():
    latent = FSQ_.bound(torch.full((1, 4, 30, 50), 0.7))
    tree = fake_tree(latent)
    assert token_count(tree, 0.0) == 1 and tree.full_tokens == 1500


def test_detailed_latent_keeps_the_full_grid_at_tau_zero():
    latent = FSQ_.bound(torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 3)
    assert token_count(fake_tree(latent), 0.0) == 256


def test_real_model_stream_decodes_to_the_reported_image():
    from tests.image.test_qkvae import debug_model

    codec = Codec(debug_model(spread=30.0))
    rng = np.random.default_rng(0)
    for h, w in ((28, 182), (1, 1), (5, 7), (33, 20)):
        ramp = np.linspace(0, 200, w)[None, :, None]
        rgb = np.clip(rng.integers(0, 56, (h, w, 3)) + ramp, 0, 255).astype(np.uint8)
        tree, _ = codec.analyse(rgb)
        for tau in (0.0, 2.0, 1e9):
            enc = codec.encode(rgb, tau=tau, tree=tree)
            out, _, tokens = codec.decode(enc.stream)
            assert out.shape == rgb.shape and tokens == enc.tokens <= enc.full_tokens
            assert np.array_equal(out, codec.reconstruct(tree, tau, h, w))
        assert codec.encode(rgb, tau=1e9, tree=tree).tokens == 1
    flat = np.full((40, 64, 3), 90, np.uint8)
    assert codec.encode(flat, tau=0.0).tokens == 1


def test_bad_streams_refused_with_one_line():
    from tests.image.test_qkvae import debug_model

    codec = Codec(debug_model())
    with pytest.raises(TinyLMError, match="not a qkvae token stream"):
        codec.decode(b"PNG....")
    enc = codec.encode(np.zeros((16, 16, 3), np.uint8) + np.arange(16, dtype=np.uint8)[:, None, None] * 16,
                       tau=0.0)
    with pytest.raises(TinyLMError, match="truncated"):
        codec.decode(enc.stream[:-2] if enc.tokens > 1 else enc.stream[:20])
    other = bytearray(enc.stream)
    other[16] = 7  # a different first FSQ level
    with pytest.raises(TinyLMError, match="FSQ levels"):
        codec.decode(bytes(other))
