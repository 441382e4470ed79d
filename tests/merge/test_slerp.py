"""SLERP against its formula, its fallbacks, per-tensor t; and the soups, which share its checks."""

import math

import pytest
import torch

from tinylm.errors import TinyLMError
from tinylm.merge.slerp import gradient_value, lerp_tensor, merge_state_dicts, plan_t, slerp_tensor
from tinylm.models.llama import fused_splits as llama_fused_splits
from tinylm.merge.soup import greedy_soup, uniform_soup
from tinylm.models.llama import Llama, LlamaConfig

CONFIG = LlamaConfig(vocab_size=50, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, ffn_hidden=48,
                     context_len=32)


def model_sd(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in Llama(CONFIG).state_dict().items()}


def formula(a, b, t):
    a64, b64 = a.double().flatten(), b.double().flatten()
    theta = math.acos(float(a64 @ b64 / (a64.norm() * b64.norm())))
    out = (math.sin((1 - t) * theta) * a64 + math.sin(t * theta) * b64) / math.sin(theta)
    return out.reshape(a.shape)


# --------------------------------------------------------------------------- tensor level

@pytest.mark.parametrize("t", [0.1, 0.5, 0.77])
def test_slerp_matches_formula(t):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 13, generator=gen), torch.randn(7, 13, generator=gen)
    torch.testing.assert_close(slerp_tensor(a, b, t).double(), formula(a, b, t),
                               rtol=1e-5, atol=1e-6)
    a64, b64 = a.double(), b.double()
    torch.testing.assert_close(slerp_tensor(a64, b64, t), formula(a64, b64, t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_endpoints_dtype_and_shape(dtype):
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 4, 5, generator=gen).to(dtype)
    b = torch.randn(3, 4, 5, generator=gen).to(dtype)
    assert torch.equal(slerp_tensor(a, b, 0.0), a)
    assert torch.equal(slerp_tensor(a, b, 1.0), b)
    mid = slerp_tensor(a, b, 0.3)
    assert mid.dtype == dtype and mid.shape == a.shape
    torch.testing.assert_close(mid.float(), formula(a.float(), b.float(), 0.3).float(),
                               rtol=2e-2, atol=2e-2)  # bf16 keeps ~3 digits


def test_nearly_parallel_falls_back_to_lerp():
    a = torch.randn(100, generator=torch.Generator().manual_seed(2))
    b = 1.5 * a + 1e-4 * torch.randn(100)
    merged, stats = merge_state_dicts({"w": a}, {"w": b}, 0.4, return_stats=True)
    torch.testing.assert_close(merged["w"], lerp_tensor(a, b, 0.4))
    assert stats.parallel == 1 and stats.slerp == 0 and stats.fallbacks == 1


def test_zero_tensor_is_defined():
    b = torch.randn(10)
    out = slerp_tensor(torch.zeros(10), b, 0.25)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, 0.25 * b)
    assert torch.equal(slerp_tensor(torch.zeros(4), torch.zeros(4), 0.5), torch.zeros(4))
    _, stats = merge_state_dicts({"w": torch.zeros(3)}, {"w": torch.ones(3)}, 0.5,
                                 return_stats=True)
    assert stats.zero == 1


def test_antiparallel_lerps_and_is_reported():
    a = torch.randn(50, generator=torch.Generator().manual_seed(3))
    merged, stats = merge_state_dicts({"x.w": a}, {"x.w": -2 * a}, 0.5, return_stats=True)
    torch.testing.assert_close(merged["x.w"], -0.5 * a)  # lerp through the origin side
    assert stats.antiparallel == ["x.w"] and stats.slerp == 0


def test_obtuse_angle_takes_the_true_short_arc():
    # cos = -0.5: mergekit and we both slerp on acos(-0.5) = 2pi/3; unit norm is preserved
    a = torch.tensor([1.0, 0.0])
    b = torch.tensor([-0.5, math.sqrt(3) / 2])
    mid = slerp_tensor(a, b, 0.5)
    torch.testing.assert_close(mid, torch.tensor([0.5, math.sqrt(3) / 2]))
    assert abs(mid.norm().item() - 1.0) < 1e-6


# --------------------------------------------------------------------------- state-dict level

def test_refuses_mismatched_state_dicts():
    a = {"a.w": torch.ones(2), "b.w": torch.ones(3)}
    with pytest.raises(TinyLMError, match="'b.w' is only in the first"):
        merge_state_dicts(a, {"a.w": torch.ones(2)})
    with pytest.raises(TinyLMError, match=r"'b.w' has shape \(3,\) vs \(4,\)"):
        merge_state_dicts(a, {"a.w": torch.ones(2), "b.w": torch.ones(4)})
    with pytest.raises(TinyLMError, match="'a.w' has dtype"):
        merge_state_dicts(a, {"a.w": torch.ones(2, dtype=torch.bfloat16), "b.w": torch.ones(3)})
    with pytest.raises(TinyLMError, match="unknown merge method 'avg'; known: lerp, slerp"):
        merge_state_dicts(a, a, method="avg")
    with pytest.raises(TinyLMError, match=r"t must be in \[0, 1\]"):
        merge_state_dicts(a, a, t=1.5)


def test_integer_tensors_are_copied_from_a():
    a = {"w": torch.ones(3), "step": torch.tensor([7])}
    b = {"w": torch.zeros(3), "step": torch.tensor([9])}
    merged, stats = merge_state_dicts(a, b, 0.5, method="lerp", return_stats=True)
    assert torch.equal(merged["step"], torch.tensor([7])) and stats.copied == ["step"]


def test_per_group_t_and_depth_gradient_pick_the_right_t():
    a = model_sd(0)
    ones = {k: torch.ones_like(v) for k, v in a.items()}
    twos = {k: 2 * torch.ones_like(v) for k, v in a.items()}
    groups = {"attention": [0.0, 1.0], "mlp": 0.25}
    merged = merge_state_dicts(ones, twos, 0.5, method="lerp", group_of=Llama.parameter_group,
                               t_by_group=groups)
    expected = {"layers.0.attn.wqkv.weight": 0.0, "layers.1.attn.wo.weight": 0.5,
                "layers.2.attn.wqkv.weight": 1.0, "layers.1.mlp.w13.weight": 0.25,
                "layers.2.attn_norm.weight": 0.5, "tok_emb.weight": 0.5, "norm.weight": 0.5}
    for name, t in expected.items():
        torch.testing.assert_close(merged[name], torch.full_like(a[name], 1 + t))

    plan = plan_t(list(a), depth_gradient=[0.2, 0.8])
    assert plan["layers.0.mlp.w2.weight"] == pytest.approx(0.2)
    assert plan["layers.1.mlp.w2.weight"] == pytest.approx(0.5)
    assert plan["layers.2.mlp.w2.weight"] == pytest.approx(0.8)
    assert plan["tok_emb.weight"] == plan["norm.weight"] == pytest.approx(0.2)  # first value
    # mergekit's 5-anchor example at layer 1 of 4: position 1/3 * 4 = 4/3 -> 0.5 -> 0.3
    assert gradient_value([0, 0.5, 0.3, 0.7, 1], 1 / 3) == pytest.approx(0.5 * 2 / 3 + 0.3 / 3)
    with pytest.raises(TinyLMError, match=r"group\(s\) \['attn'\] that match no tensor"):
        plan_t(list(a), t_by_group={"attn": 0.3})


def test_fused_splits_merge_each_part_with_its_own_angle():
    a, b = model_sd(0), model_sd(1)
    merged = merge_state_dicts(a, b, 0.3, split_of=llama_fused_splits(CONFIG))
    name, sizes = "layers.1.attn.wqkv.weight", [4 * 8, 2 * 8, 2 * 8]
    parts = [slerp_tensor(x, y, 0.3) for x, y in zip(a[name].split(sizes), b[name].split(sizes))]
    torch.testing.assert_close(merged[name], torch.cat(parts))
    whole = merge_state_dicts(a, b, 0.3)[name]
    assert not torch.allclose(whole, merged[name])  # one angle for q|k|v is a different merge


# --------------------------------------------------------------------------- soups

def test_uniform_soup_is_the_mean():
    sds = [model_sd(s) for s in range(3)]
    soup = uniform_soup(sds)
    for name in sds[0]:
        torch.testing.assert_close(soup[name], sum(sd[name] for sd in sds) / 3)


def test_greedy_soup_keeps_only_strict_improvements():
    target, e1, e2 = torch.zeros(4), torch.eye(4)[0], torch.eye(4)[1]
    candidates = {"c1": {"w": target + e1}, "c3": {"w": target + 5 * e2},
                  "c2": {"w": target - e1}, "c4": {"w": target + e1}}

    def loss(sd):
        return float((sd["w"] - target).norm())

    soup, kept = greedy_soup(candidates, loss)
    assert kept == ["c1", "c2"]  # c4 and c3 each pull the soup away from the target
    torch.testing.assert_close(soup["w"], target)
    _, kept_acc = greedy_soup(candidates, lambda sd: -loss(sd), higher_is_better=True)
    assert kept_acc == kept


def test_greedy_soup_does_not_keep_a_tie():
    w = {"w": torch.ones(3)}
    soup, kept = greedy_soup([("a", w), ("b", {"w": torch.ones(3)})], lambda sd: 1.0)
    assert kept == ["a"] and torch.equal(soup["w"], w["w"])


def test_matches_mergekit_slerp_on_the_same_tensors():
    """mergekit's own slerp function on the same pairs: random, nearly parallel (its lerp
    fallback), opposite-leaning; several t. Skipped where mergekit is not installed (it pins
    heavy dependencies, so CI leaves it out); benchmarks/bench_merge.py compares whole merges."""
    mergekit_slerp = pytest.importorskip("mergekit.merge_methods.slerp").slerp
    g = torch.Generator().manual_seed(11)
    a = torch.randn(64, 48, generator=g)
    pairs = [(a, torch.randn(64, 48, generator=g)),
             (a, a + 1e-4 * torch.randn(64, 48, generator=g)),
             (a, -a + 0.5 * torch.randn(64, 48, generator=g))]
    for x, y in pairs:
        for t in (0.0, 0.25, 0.5, 0.9, 1.0):
            # mergekit's kernel takes a leading batch axis; its merges pass a tensor as one row
            theirs = mergekit_slerp(torch.tensor([t]), x[None].clone(), y[None].clone())[0]
            assert torch.allclose(slerp_tensor(x, y, t), theirs, atol=1e-6, rtol=1e-5)
