"""Uncertainty: standard errors against closed forms and a brute-force bootstrap, interval
coverage, the paired bootstrap on identical and on planted-different models, McNemar by hand,
and the per-item outputs of real benchmark scores."""

import math

import numpy as np
import pytest

from tests.eval.conftest import planted
from tinylm.errors import TinyLMError
from tinylm.eval import stats
from tinylm.eval.harness import summary
from tinylm.eval.lm import LMScorer
from tinylm.eval.settings import EvalSettings
from tinylm.eval.tasks import get_benchmark
from tinylm.tokenizers import ByteTokenizer


def test_accuracy_se_is_the_binomial_closed_form():
    assert stats.binomial_se(0.3, 400) == pytest.approx(math.sqrt(0.3 * 0.7 / 400))
    credits = np.array([1] * 120 + [0] * 280)  # p = 0.3, n = 400
    assert stats.mean_se(credits) == pytest.approx(math.sqrt(0.3 * 0.7 / 400), rel=1e-12)
    assert stats.mean_se([1, 1, 1]) == 0.0 and stats.mean_se([]) is None
    # ARC-Easy's 400 questions at 50%: the issue's +-2.5 points (2.1 at its 23% accuracy)
    assert stats.binomial_se(0.5, 400) == pytest.approx(0.025)
    assert stats.binomial_se(0.23, 400) == pytest.approx(0.021, abs=5e-4)
    low, high = stats.normal_interval(0.3, 400)
    assert (high - low) / 2 == pytest.approx(stats.Z95 * math.sqrt(0.21 / 400))


def test_wilson_matches_its_formula_and_both_intervals_cover():
    low, high = stats.wilson_interval(120, 400)
    z = stats.Z95
    centre = (0.3 + z * z / 800) / (1 + z * z / 400)
    assert (low + high) / 2 == pytest.approx(centre)
    assert low < 0.3 < high and stats.wilson_interval(0, 10)[0] == pytest.approx(0, abs=1e-12)
    rng = np.random.default_rng(0)
    p, n, trials = 0.3, 400, 4000
    hits = rng.binomial(n, p, size=trials)
    wald = [stats.normal_interval(k / n, n) for k in hits]
    wilson = [stats.wilson_interval(int(k), n) for k in hits]
    for intervals in (wald, wilson):
        coverage = np.mean([lo <= p <= hi for lo, hi in intervals])
        assert 0.93 < coverage < 0.97
    with pytest.raises(TinyLMError):
        stats.wilson_interval(0, 0)


def synthetic_docs(rng, n=60):
    tokens = rng.integers(200, 5000, size=n).astype(float)
    nll = tokens * rng.normal(3.5, 0.4, size=n)  # per-document CE varies around 3.5 nats
    return nll, tokens


def test_ratio_se_matches_a_document_bootstrap():
    rng = np.random.default_rng(1)
    nll, tokens = synthetic_docs(rng)
    draws = []
    for _ in range(8000):
        idx = rng.integers(0, len(nll), len(nll))
        draws.append(nll[idx].sum() / tokens[idx].sum())
    assert stats.ratio_se(nll, tokens) == pytest.approx(np.std(draws), rel=0.08)
    assert stats.ratio_se(nll[:1], tokens[:1]) is None  # one document: no spread to see


def test_composite_se_adds_independent_variances():
    assert stats.composite_se(0.03, 0.004, 0.02) == pytest.approx(
        math.sqrt(0.03 ** 2 + 0.004 ** 2 + 0.02 ** 2) / 3)
    assert stats.composite_se(0.03, None, 0.02) is None


def test_paired_bootstrap_identical_models_and_a_planted_difference():
    rng = np.random.default_rng(2)
    a = (rng.random(1000) < 0.6).astype(float)
    same = stats.paired_bootstrap(a, a, n_resamples=500, seed=3)
    assert same["diff"] == 0.0 and same["ci_low"] == 0.0 == same["ci_high"]
    assert same["p"] == pytest.approx(1.0)
    b = a.copy()
    flip = np.flatnonzero(a == 1)[:80]  # b loses 80 of a's right answers: -8 points
    b[flip] = 0
    planted_diff = stats.paired_bootstrap(a, b, n_resamples=2000, seed=3)
    assert planted_diff["diff"] == pytest.approx(0.08)
    assert planted_diff["ci_low"] > 0 and planted_diff["p"] < 0.01
    assert planted_diff == stats.paired_bootstrap(a, b, n_resamples=2000, seed=3)  # seeded
    # a ratio statistic: one model's documents 2% worse everywhere
    nll, tokens = synthetic_docs(rng)
    worse = stats.paired_bootstrap(nll * 1.02, nll, tokens, tokens, n_resamples=1000)
    assert worse["ci_low"] > 0 and worse["diff"] == pytest.approx(
        0.02 * nll.sum() / tokens.sum())
    with pytest.raises(TinyLMError):
        stats.paired_bootstrap(a, a[:10])


def test_mcnemar_against_a_hand_computed_case():
    # a right and b wrong on 9 items, the reverse on 2, 89 agree: p = P(|X - 5.5| >= 3.5),
    # X ~ Bin(11, 1/2) = 2 * (C(11,0) + C(11,1) + C(11,2)) / 2^11 = 2 * 67 / 2048
    a = np.array([1] * 9 + [0] * 2 + [1] * 50 + [0] * 39)
    b = np.array([0] * 9 + [1] * 2 + [1] * 50 + [0] * 39)
    result = stats.mcnemar(a, b)
    assert result["a_only"] == 9 and result["b_only"] == 2
    assert result["p"] == pytest.approx(2 * 67 / 2048)
    assert stats.mcnemar(a, a)["p"] == 1.0
    with pytest.raises(TinyLMError, match="0/1"):
        stats.mcnemar([0.5, 1], [1, 1])


def test_codecs_round_trip():
    ids = ["0", "1", "2", "5", "7", "8", "x", "10"]
    assert stats.compress_ranges(ids) == "0-2,5,7-8,x,10"
    assert stats.expand_ranges(stats.compress_ranges(ids)) == ids
    assert stats.expand_ranges(stats.compress_ranges([str(i) for i in range(1000)])) == \
        [str(i) for i in range(1000)]
    assert stats.compress_ranges([str(i) for i in range(1000)]) == "0-999"
    credits = np.array([0, 0.5, 1, 1, 0])
    assert stats.encode_credits(credits) == "01220"
    assert stats.decode_credits("01220").tolist() == credits.tolist()


def score(bench, model, data, **settings):
    scorer = LMScorer(model, ByteTokenizer())
    return get_benchmark(bench).run(scorer, EvalSettings(**settings), None, data)


def test_benchmark_scores_carry_items_and_ses_the_summary_reads(fake_data):
    model, other = planted(favour=b"a"), planted(favour=b"ze")
    results = {}
    for bench in ("wikitext2", "blimp", "arc_easy"):
        scores = score(bench, model, fake_data)
        results[bench] = {"status": "ok", "scores": scores, "settings": {"split": "all"}}
        found = stats.items(scores, bench)
        if bench == "wikitext2":
            assert sum(found["score"]) == pytest.approx(scores["nll"])
            assert sum(found["den"]) == scores["tokens"] and found["ids"] == [0, 1]
            assert scores["ce_loss_se"] == pytest.approx(stats.ratio_se(found["score"],
                                                                        found["den"]))
        else:
            assert found["score"].mean() == pytest.approx(scores["acc"])
            assert scores["acc_se"] == pytest.approx(stats.mean_se(found["score"]))
        paired = stats.compare(scores, score(bench, other, fake_data), bench, n_resamples=200)
        assert paired["n"] == len(found["ids"]) and paired["ci_low"] <= paired["ci_high"]
    assert stats.items(results["blimp"]["scores"], "blimp")["ids"] == \
        ["p_one/0", "p_one/1", "p_two/0"]
    assert "mcnemar_p" in stats.compare(results["arc_easy"]["scores"],
                                        results["arc_easy"]["scores"], "arc_easy")
    flat = summary(results)
    for key in ("wikitext2_ce_se", "wikitext2_bpb_se", "blimp_acc_se", "arc_easy_acc_se",
                "arc_easy_acc_norm_se", "composite_se"):
        assert flat[key] >= 0, key
    assert flat["composite_se"] == pytest.approx(stats.composite_se(
        flat["wikitext2_ce_se"], flat["blimp_acc_se"], flat["arc_easy_acc_se"]))
    assert flat["split"] == "all"
    text = stats.format_comparison({"diff": 0.005, "ci_low": -0.016, "ci_high": 0.026, "p": 0.64},
                                   percent=True)
    assert text == "+0.5 ± 2.1 points (95% CI), p = 0.640"


def test_leaderboards_show_plus_minus_where_an_se_is_known():
    from tinylm.eval.leaderboard import as_entry, to_html, to_markdown

    entries = [as_entry("a", 100, {"composite": 1.5, "composite_se": 0.0123, "blimp_acc": 0.7,
                                   "blimp_acc_se": 0.02}),
               as_entry("b", 200, {"composite": 1.6, "blimp_acc": 0.6})]
    markdown = to_markdown(entries)
    assert "**1.5000 ± 0.0123**" in markdown and "**70.00% ± 2.00%**" in markdown
    assert "| 60.00% |" in markdown  # no se: the value alone, as before
    assert "70.00% ± 2.00%" in to_html(entries)
