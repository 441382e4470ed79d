"""The BLT no-leak gate: no logit and no patch boundary at position t may depend on a byte
after t, and generating byte by byte must give the full forward's logits.

`leaks(model, x)` runs the three checks of issue 11 and returns what it found (empty = no
leak); the tests run it on random bytes and on a real TinyStories line, in both patching
modes, and then on a planted leak (a patcher rule that looks one byte ahead) to show the gate
catches it.
(a) gradient: d logit_t / d embedding_s = 0 exactly for every s > t (byte and hash n-gram
    embeddings, through everything trained);
(b) perturbation: new random bytes after t change neither logits <= t nor patch ids <= t (the
    patcher is discrete, so only this check sees it);
(c) generation: the cached byte-by-byte path gives the full forward's logits and patch ids.
"""

from __future__ import annotations

import pytest
import torch

from tinylm.models import blt_patching as patching
from tinylm.models import get_family
from tinylm.models.blt import BLT

LOGIT_TOL = 1e-5  # float rounding between batched and per-byte shapes; a leak is far larger


@pytest.fixture(autouse=True)
def one_thread():
    """Hundreds of tiny ops: on a shared 2-core box, thread hand-offs cost more than they
    save (20x here under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def debug_model(mode: str = "global", model_class=BLT, seed: int = 0) -> BLT:
    """The blt-debug shape with theta set so patches have varied lengths (about 3 bytes)."""
    torch.manual_seed(seed)
    record = get_family("blt")
    config = record.config_from({**record.presets["blt-debug"].model, "vocab_size": 257,
                                 "patch_mode": mode})
    model = model_class(config).eval()
    with torch.no_grad():  # an untrained patcher is nearly flat: sharpen it so entropy varies
        model.patcher.tok_emb.weight.mul_(40.0)
        sample = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(1))
        entropy = patching.next_byte_entropy(model.patcher(sample))
        model.patcher.threshold.fill_(patching.fit_threshold(entropy, 3.0, mode))
    return model


def leaks(model: BLT, x: torch.Tensor, points: int = 5) -> list[str]:
    """The gate: what it found, one line per leak (see the module docstring)."""
    found = []
    batch, length = x.shape
    ids = model.boundaries(x)
    if int(ids.max()) + 1 >= length:
        raise AssertionError("every byte is its own patch: the gate would test too little")
    embedded = model.embed(x).detach().requires_grad_(True)
    logits = model(x, embedded=embedded)
    positions = torch.linspace(0, length - 2, points).long().unique().tolist()
    for t in positions:  # (a)
        grad, = torch.autograd.grad(logits[:, t].sum(), embedded, retain_graph=True)
        after = grad[:, t + 1:].abs().max().item()
        if after != 0:
            found.append(f"gradient: logit {t} depends on later bytes (|grad| {after:.3g})")
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        reference = model(x)
        for t in positions:  # (b)
            changed = x.clone()
            changed[:, t + 1:] = torch.randint(0, 256, (batch, length - t - 1),
                                               generator=generator)
            if not torch.equal(model.boundaries(changed)[:, :t + 1], ids[:, :t + 1]):
                found.append(f"perturbation: patch ids <= {t} moved with later bytes")
            diff = (model(changed)[:, :t + 1] - reference[:, :t + 1]).abs().max().item()
            if diff > LOGIT_TOL:
                found.append(f"perturbation: logits <= {t} changed by {diff:.3g}")
        cache = model.new_cache(batch, length)  # (c)
        stepped = model(x, cache, 0)
        diff = (stepped - reference).abs().max().item()
        if diff > LOGIT_TOL:
            found.append(f"generation: byte-by-byte logits differ from forward by {diff:.3g}")
        if not torch.equal(cache.patch_id[:, :length], ids):
            found.append("generation: byte-by-byte patch ids differ from forward's")
    return found


def tinystories_line(data_dir, length: int) -> torch.Tensor:
    text = (data_dir / "tinystories" / "TinyStories-valid-prefix.txt").read_text()
    line = next(s for s in text.splitlines() if len(s.encode()) >= length)
    return torch.tensor([list(line.encode()[:length])])


def test_gate_passes_on_random_bytes_in_both_modes():
    x = torch.randint(0, 257, (2, 32), generator=torch.Generator().manual_seed(0))
    for mode in patching.MODES:
        assert leaks(debug_model(mode), x) == [], mode


def test_gate_passes_on_real_text(data_dir):
    x = tinystories_line(data_dir, 40)
    assert leaks(debug_model("global"), x) == []


class LookAheadBLT(BLT):
    """A planted leak: whether byte i starts a patch may depend on bytes < i only (entropy
    [:, i - 1]); this rule decides it with entropy[:, i + 1], computed after reading byte
    i + 1: a patch boundary with one byte of look-ahead."""

    def boundaries(self, idx):
        with torch.no_grad():
            entropy = patching.next_byte_entropy(self.patcher(idx))
            ahead = torch.cat([entropy[:, 2:], entropy[:, -1:].expand(-1, 2)], dim=1)
            starts = patching.patch_starts(ahead, self.patcher.threshold,
                                           self.config.patch_mode)
        return patching.patch_ids(starts)


def test_gate_catches_a_boundary_with_one_byte_of_look_ahead():
    x = torch.randint(0, 257, (1, 32), generator=torch.Generator().manual_seed(0))
    found = leaks(debug_model("global", LookAheadBLT), x)
    kinds = {line.split(":")[0] for line in found}
    assert "perturbation" in kinds and "generation" in kinds, found
    assert any(line.startswith("perturbation: patch ids") for line in found), found


def test_patch_starts_read_only_earlier_entropies():
    entropy = torch.tensor([[0.5, 2.0, 0.1, 3.0, 3.5]])
    assert patching.patch_starts(entropy, 1.0, "global").tolist() == \
        [[True, False, True, False, True]]
    # monotonic: a start where the entropy *rose* by more than theta at the position before
    assert patching.patch_starts(entropy, 1.0, "monotonic").tolist() == \
        [[True, False, True, False, True]]
    assert patching.patch_starts(entropy, -0.5, "monotonic").tolist() == \
        [[True, True, True, False, True]]
    assert patching.patch_ids(patching.patch_starts(entropy, 1.0, "global")).tolist() == \
        [[0, 0, 1, 1, 2]]


def test_fitted_threshold_gives_the_target_mean_patch_length():
    entropy = torch.rand(16, 256, generator=torch.Generator().manual_seed(0)) * 3
    for mode in patching.MODES:
        theta = patching.fit_threshold(entropy, 4.4, mode)
        stats = patching.patch_statistics(patching.patch_starts(entropy, theta, mode))
        assert abs(stats["mean"] - 4.4) < 0.1, (mode, stats)
        assert sum(stats["histogram"].values()) == stats["patches"]
        assert stats["bytes"] == entropy.numel()
