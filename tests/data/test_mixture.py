"""Data mixtures: weights, determinism in (seed, step), per-source caches, through the trainer."""

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from tinylm.data.mixture import MixedTokens, mixture_batch, parse_mixture
from tinylm.data.sampler import train_batch, validation_batches
from tinylm.errors import TinyLMError


def test_parse_weights_and_refusals():
    assert parse_mixture("c4") == [("c4", 1.0)]
    assert parse_mixture("c4:3,fineweb-edu:1") == [("c4", 0.75), ("fineweb-edu", 0.25)]
    assert parse_mixture("hf:roneneldan/TinyStories:2,c4:2") == [
        ("hf:roneneldan/TinyStories", 0.5), ("c4", 0.5)]
    for bad in ("c4:0", "c4:-1", "c4:nan", "c4,c4", "", "c4:inf"):
        with pytest.raises(TinyLMError):
            parse_mixture(bad)


def test_rows_follow_the_weights_and_the_step():
    a = np.zeros(10_000, dtype=np.uint16)
    b = np.ones(10_000, dtype=np.uint16)
    mixed = MixedTokens(["a", "b"], [a, b], np.array([0.8, 0.2]))
    x, y = mixture_batch(mixed, 16, 4000, seed=1, step=3)
    share_b = x[:, 0].float().mean().item()
    assert abs(share_b - 0.2) < 0.03  # binomial: 4000 rows, SE 0.0063
    again, _ = mixture_batch(mixed, 16, 4000, seed=1, step=3)
    other, _ = mixture_batch(mixed, 16, 4000, seed=1, step=4)
    assert torch.equal(x, again) and not torch.equal(x, other)
    # ranks take their slice of the one global batch
    halves = [mixture_batch(mixed, 16, 4000, 1, 3, rank=r, world=2)[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), x)
    # a single array keeps the plain sampler; validation takes each source's share
    assert torch.equal(train_batch(a, 16, 8, 1, 3)[0], train_batch(a, 16, 8, 1, 3)[0])
    val = torch.cat([v for v, _ in validation_batches(mixed, 16, 10, 2)])
    assert val.shape[0] == 20 and val[:, 0].sum().item() == 4  # 20 windows, 20% from b


def test_a_mixture_trains_with_one_cache_per_source(tmp_path):
    cache = tmp_path / "cache"
    proc = run_cli("train", "--preset", "debug", "--data", "c4:0.7,fineweb-edu-stream:0.3",
                   "--steps", "4", "--ckpt-every", "4", "--eval-every", "4", "--no-progress",
                   "--out", str(tmp_path / "run"), env={"TINYLM_CACHE": str(cache)})
    assert "val loss" in proc.stdout
    names = sorted(p.name for p in (cache / "tokens").glob("*.bin"))
    assert any(n.startswith("c4-train") for n in names)
    assert any(n.startswith("fineweb-edu-stream-val") for n in names)
