"""Filter: the nearest-rank top-q rule (against numpy), a score column, a learned scorer."""

from collections import Counter

import numpy as np
import pytest

from tinylm.data.curate.filter import FilterConfig, filter_dataset
from tinylm.data.curate.filter import nearest_rank_percentile as percentile
from tinylm.data.curate.ingest import IngestConfig, ingest
from tinylm.errors import TinyLMError


def quiet(*_):
    pass


@pytest.mark.parametrize("seed", range(5))
def test_percentile_is_numpy_inverted_cdf(seed):
    """Hyndman & Fan definition 1 is numpy's method="inverted_cdf"."""
    scores = np.random.default_rng(seed).integers(0, 6, size=37 + seed).astype(float)
    for percent in (0, 1, 25, 50, 74.9, 99, 100):
        want = np.percentile(scores, percent, method="inverted_cdf")
        assert percentile(Counter(scores.tolist()), percent) == want


def test_fineweb_edu_top_75_percent(tmp_path, data_dir):
    """The blog's rule on the 150 annotated documents: score >= its 25th percentile."""
    source = ingest(IngestConfig(["fineweb-edu"], str(tmp_path / "fw"), author="ana",
                                 data_dir=data_dir), log=quiet)
    scores = [float(r["meta"]["score"]) for r in source.iter_rows()]
    threshold = np.percentile(scores, 25, method="inverted_cdf")
    out = filter_dataset(FilterConfig(str(source.path), str(tmp_path / "top"),
                                      score_column="score", keep_top=75, author="ana"),
                         log=quiet)
    kept = [r for r in source.iter_rows() if float(r["meta"]["score"]) >= threshold]
    assert [r["id"] for r in out.iter_rows()] == [r["id"] for r in kept]
    step = out.info["history"][-1]
    assert step["threshold"] == threshold == 3.0 and step["rows_out"] == len(kept) == 134
    assert step["input_manifest_sha256"] == source.manifest_sha256
    assert out.info["sources"] == source.info["sources"]  # provenance carried over
    bar = filter_dataset(FilterConfig(str(source.path), str(tmp_path / "bar"),
                                      score_column="score", min_score=4), log=quiet)
    assert bar.row_count() == sum(s >= 4 for s in scores)


def test_learned_scorer_keeps_the_lowest_loss(tmp_path, stories):
    """--scorer CKPT: a tinylm model's bits per byte; kept rows all score better than the
    dropped ones, and the stored figure is the eval core's rolling log-likelihood."""
    import math

    import torch

    from tinylm.data.curate.dataset import open_dataset
    from tinylm.eval.lm import LMScorer
    from tinylm.models import build_model
    from tinylm.tokenizers import ByteTokenizer
    from tinylm.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = {"dim": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "ffn_hidden": 32,
              "context_len": 32, "vocab_size": 257}
    model = build_model("llama", config)
    ckpt = save_checkpoint(tmp_path / "ckpt", family="llama", model_config=config,
                           model_state=model.state_dict(), tokenizer=ByteTokenizer())
    out = filter_dataset(FilterConfig(str(stories), str(tmp_path / "f"), scorer=str(ckpt),
                                      keep_top=50), log=quiet)
    kept = {r["id"] for r in out.iter_rows()}
    assert 20 <= len(kept) <= 22  # ties at the threshold are kept
    scorer = LMScorer(model.eval(), ByteTokenizer())
    bpb = {r["id"]: -scorer.loglikelihood_rolling([r["text"]])[0] / math.log(2)
           / len(r["text"].encode()) for r in open_dataset(stories).iter_rows()}
    assert max(bpb[i] for i in kept) <= min(v for i, v in bpb.items() if i not in kept)
    for row in out.iter_rows():
        assert row["meta"]["bits_per_byte"] == pytest.approx(bpb[row["id"]], abs=1e-5)
    assert out.info["history"][-1]["scorer"]["scorer"] == "model"


@pytest.mark.parametrize("settings, message", [
    ({"score_column": "score"}, "exactly one of --keep-top"),
    ({"score_column": "score", "keep_top": 10, "min_score": 1}, "exactly one of --keep-top"),
    ({"keep_top": 10}, "exactly one of --score-column"),
    ({"score_column": "score", "keep_top": 0}, "--keep-top must be a percent"),
    ({"score_column": "nope", "keep_top": 50}, "score column 'nope' is missing"),
    ({"scorer": "not-a-checkpoint", "keep_top": 50}, "not a tinylm checkpoint"),
    ({"scorer": "zlib", "keep_top": 50}, "zlib is a difficulty proxy"),
])
def test_bad_settings(tmp_path, stories, settings, message):
    with pytest.raises(TinyLMError, match=message):
        filter_dataset(FilterConfig(str(stories), str(tmp_path / "out"), **settings),
                       log=quiet)
    assert not (tmp_path / "out").exists()
