"""Symmetry transforms keep the function; alignment finds a planted transform exactly."""

import pytest
import torch

from tinylm.merge.align import (align_to, identity_transform, invert_transform, permute_model,
                                random_transform)
from tinylm.merge.slerp import merge_state_dicts
from tinylm.models.llama import Llama, LlamaConfig

CONFIG = LlamaConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48,
                     context_len=32)


def build(seed: int) -> Llama:
    torch.manual_seed(seed)
    model = Llama(CONFIG).eval()
    with torch.no_grad():  # non-trivial norm gains, so the norms are exercised too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def logits(state_dict) -> torch.Tensor:
    model = Llama(CONFIG).eval()
    model.load_state_dict(state_dict)
    idx = torch.randint(0, CONFIG.vocab_size, (2, CONFIG.context_len),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(idx)


def planted(seed: int = 1):
    return random_transform(CONFIG, torch.Generator().manual_seed(seed))


def assert_sd_close(x, y, **tol):
    assert x.keys() == y.keys()
    for name in x:
        torch.testing.assert_close(x[name], y[name], msg=name, **tol)


def test_random_transform_preserves_logits():
    ref = build(0).state_dict()
    perms, signs = planted()
    moved = permute_model(ref, CONFIG, perms, signs)
    assert not torch.allclose(moved["layers.0.attn.wqkv.weight"], ref["layers.0.attn.wqkv.weight"])
    torch.testing.assert_close(logits(moved), logits(ref), rtol=1e-5, atol=1e-5)


def test_invert_undoes_a_transform():
    ref = build(0).state_dict()
    perms, signs = planted()
    back = permute_model(permute_model(ref, CONFIG, perms, signs), CONFIG,
                         *invert_transform(perms, signs))
    assert_sd_close(back, ref, rtol=0, atol=0)
    same = permute_model(ref, CONFIG, *identity_transform(CONFIG))
    assert_sd_close(same, ref, rtol=0, atol=0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_alignment_recovers_the_planted_transform(seed):
    ref = build(0).state_dict()
    perms, signs = planted(seed)
    moved = permute_model(ref, CONFIG, perms, signs)
    aligned, found_perms, found_signs = align_to(ref, moved, CONFIG, return_transform=True)
    assert_sd_close(aligned, ref, rtol=1e-6, atol=1e-7)
    want_perms, want_signs = invert_transform(perms, signs)
    for got, want in zip(found_perms, want_perms):
        for part in ("mlp", "kv", "q", "v"):
            assert torch.equal(getattr(got, part), getattr(want, part)), part
    for got, want in zip(found_signs, want_signs):
        for part in ("mlp", "rope", "v"):
            assert torch.equal(getattr(got, part).float(), getattr(want, part).float()), part


def test_alignment_without_value_perms_still_undoes_signs_and_heads():
    ref = build(0).state_dict()
    perms, signs = planted(4)
    for p in perms:  # plant no value-dim permutation
        p.v = torch.arange(CONFIG.head_dim).repeat(CONFIG.n_kv_heads, 1)
    moved = permute_model(ref, CONFIG, perms, signs)
    assert_sd_close(align_to(ref, moved, CONFIG, value_perms=False), ref, rtol=1e-6, atol=1e-7)


def test_aligning_an_unrelated_model_keeps_its_function():
    ref, other = build(0).state_dict(), build(5).state_dict()
    aligned = align_to(ref, other, CONFIG)
    torch.testing.assert_close(logits(aligned), logits(other), rtol=1e-5, atol=1e-5)
    # alignment can only bring the two closer, layer weights included
    dist = lambda sd: sum(float((sd[k] - ref[k]).norm() ** 2) for k in ref if "layers." in k)
    assert dist(aligned) < dist(other)


def test_merging_with_the_aligned_copy_gives_the_original():
    ref = build(0).state_dict()
    moved = permute_model(ref, CONFIG, *planted(6))
    merged = merge_state_dicts(ref, align_to(ref, moved, CONFIG), 0.5)
    assert_sd_close(merged, ref, rtol=1e-5, atol=1e-6)
    naive = merge_state_dicts(ref, moved, 0.5)  # without alignment the merge breaks the model
    assert (logits(naive) - logits(ref)).abs().max() > 1e-3
