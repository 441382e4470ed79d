"""Rank: difficulty bands easy -> hard, and the curriculum sampler that follows them."""

import zlib

import numpy as np
import pytest

from tinylm.data.curate.dataset import open_dataset
from tinylm.data.curate.rank import RankConfig, rank_dataset
from tinylm.data.curriculum import CurriculumTokens, competence
from tinylm.data.sampler import train_batch
from tinylm.errors import TinyLMError


def quiet(*_):
    pass


def zlib_bpb(text: str) -> float:
    data = text.encode()
    return 8 * len(zlib.compress(data, 9)) / len(data)


def test_bands_in_order_rows_kept(tmp_path, stories):
    ranked = rank_dataset(RankConfig(str(stories), str(tmp_path / "ranked"), buckets=4),
                          log=quiet)
    rows = list(ranked.iter_rows())
    source = list(open_dataset(stories).iter_rows())
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in source)
    for row in rows:
        assert row["meta"]["difficulty"] == pytest.approx(zlib_bpb(row["text"]), rel=1e-5)
    bands = ranked.info["curriculum"]["bands"]
    assert sum(b["rows"] for b in bands) == 40 and len(bands) == 4
    start, order = 0, [r["id"] for r in source]
    for lower, band in zip([-1.0] + [b["max_difficulty"] for b in bands], bands):
        members = rows[start:start + band["rows"]]
        assert all(lower < r["meta"]["difficulty"] <= band["max_difficulty"] for r in members)
        positions = [order.index(r["id"]) for r in members]
        assert positions == sorted(positions)  # original order within a band
        start += band["rows"]
    assert len(ranked.parts) == len(open_dataset(stories).parts)  # the same part size


def test_bad_settings(tmp_path, stories):
    with pytest.raises(TinyLMError, match="--buckets must be"):
        rank_dataset(RankConfig(str(stories), str(tmp_path / "r"), buckets=0), log=quiet)
    manifest = open_dataset(stories).manifest_sha256
    with pytest.raises(TinyLMError, match="is the input dataset"):
        rank_dataset(RankConfig(str(stories), str(stories), force=True), log=quiet)
    assert open_dataset(stories).manifest_sha256 == manifest


def test_competence_schedule():
    assert competence(0, 100) == pytest.approx(0.1)
    assert competence(100, 100) == 1.0 and competence(500, 100) == 1.0
    values = [competence(s, 100) for s in range(101)]
    assert values == sorted(values)


def test_curriculum_batches_start_easy_and_are_pure():
    tokens = np.arange(10_000, dtype=np.uint16)
    curriculum = CurriculumTokens(tokens, total_steps=100)
    x, y = train_batch(curriculum, 16, 64, seed=1, step=0)
    assert int(x.max()) < 1_000 and bool((y[:, :-1] == x[:, 1:]).all())  # the easy tenth
    late, _ = train_batch(curriculum, 16, 64, seed=1, step=99)
    assert int(late.max()) >= 5_000  # by the end, the whole range
    again, _ = train_batch(CurriculumTokens(tokens, total_steps=100), 16, 64, seed=1, step=0)
    assert bool((again == x).all())  # a pure function of the step: resume is exact
