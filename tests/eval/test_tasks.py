"""The benchmarks on hand-made data with a planted-preference model (answers known in advance),
and WikiText-2's splitting and detokenising checked on the real file against lm-eval's rules."""

import math

import pytest

from tests.eval.conftest import arc_item, planted
from tinylm.eval.lm import LMScorer
from tinylm.eval.settings import EvalSettings
from tinylm.eval.tasks import get_benchmark
from tinylm.eval.tasks.arc import fewshot_prefix
from tinylm.eval.tasks.wikitext import detokenize, split_pages
from tinylm.tokenizers import ByteTokenizer


def run(bench, model, data, limit=None, **settings):
    scorer = LMScorer(model, ByteTokenizer())
    return get_benchmark(bench).run(scorer, EvalSettings(**settings), limit, data)


def test_blimp_planted_preference_and_breakdowns(fake_data):
    scores = run("blimp", planted(favour=b"a"), fake_data)
    # pairs: 'aa a.' > 'bb b.' (right), 'a a' > 'a b' (right), 'b' < 'a' (wrong)
    assert scores["pairs"] == 3 and scores["ties"] == 0
    assert scores["acc"] == pytest.approx(2 / 3) == scores["acc_ties_correct"]
    assert scores["by_paradigm"]["p_one"]["acc"] == 1.0
    assert scores["by_paradigm"]["p_two"]["acc"] == 0.0
    assert scores["by_field"] == {"morphology": {"acc": 1.0, "pairs": 2, "paradigms": 1},
                                  "syntax": {"acc": 0.0, "pairs": 1, "paradigms": 1}}
    assert run("blimp", planted(favour=b"a"), fake_data, limit=1)["pairs"] == 2  # per paradigm


def test_blimp_ties_follow_the_chosen_rule(fake_data):
    uniform = planted()  # every pair has equal byte lengths: all three tie
    assert run("blimp", uniform, fake_data)["ties"] == 3
    assert run("blimp", uniform, fake_data)["acc"] == 0.5
    assert run("blimp", uniform, fake_data, blimp_ties="correct")["acc"] == 1.0  # lm-eval
    assert run("blimp", uniform, fake_data, blimp_ties="wrong")["acc"] == 0.0


def test_arc_planted_preference_acc_and_length_normalised(fake_data):
    scores = run("arc_easy", planted(favour=b"z"), fake_data)
    # the summed log-prob picks the z-richest choice: right on all three questions; per
    # character, the long 'qqqqqqq' (t2) and 'zzzzzzzz' (t3) win: only t1 stays right
    assert scores["questions"] == 3
    assert scores["acc"] == 1.0
    assert scores["acc_norm"] == pytest.approx(1 / 3) == scores["acc_bytes"]
    assert scores["truncated_questions"] == 0 and scores["shots"] == 0
    assert scores["chance"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)


def test_arc_shots_never_show_the_test_item_and_truncation_is_counted(fake_data):
    train = [arc_item(f"x{i}", f"Train question {i}?", ["right", "wrong"], 0) for i in range(6)]
    item = arc_item("x3", "Train question 3?", ["a", "b"], 0)  # the same id as a train item
    prefix = fewshot_prefix(item, train, 5, seed=1)
    assert prefix.count("Question:") == 5 and "Train question 3?" not in prefix
    assert prefix.endswith("Answer: right\n\n")
    assert fewshot_prefix(item, train, 5, seed=1) == prefix     # fixed per (seed, id)
    assert fewshot_prefix(item, train, 2, seed=1).count("Question:") == 2
    short = planted(favour=b"z", context_len=48)
    scores = run("arc_easy", short, fake_data, shots=2)
    assert scores["shots"] == 2 and scores["truncated_questions"] == 3
    assert run("arc_easy", short, fake_data)["truncated_questions"] == 0


def test_wikitext_pages_counts_and_formulas(fake_data):
    raw = (fake_data / "wikitext-2" / "wiki.test.raw").read_text()
    pages = split_pages(raw)
    assert len(pages) == 2 and pages[0].startswith(" = First = ")
    assert pages[1].startswith(" = Second = ") and "= = Part = =" in pages[1]
    model = planted(favour=b"e")
    scores = run("wikitext2", model, fake_data)
    texts = [detokenize(p) for p in pages]
    nll = -sum(model.logprob(t.encode()) for t in texts)  # a unigram model: no context effect
    assert scores["documents"] == 2 and scores["nll"] == pytest.approx(nll, rel=1e-6)
    assert scores["tokens"] == sum(len(t.encode()) for t in texts) == scores["scored_bytes"]
    assert scores["bytes"] == sum(len(p.encode()) for p in pages)
    assert scores["ce_loss"] == pytest.approx(nll / scores["tokens"])
    assert scores["bits_per_byte"] == pytest.approx(nll / scores["bytes"] / math.log(2))
    assert scores["byte_perplexity"] == pytest.approx(math.exp(nll / scores["bytes"]))
    assert scores["word_perplexity"] == pytest.approx(math.exp(nll / scores["words"]))
    assert scores["stride"] == 32  # half of the model's 64-token context
    whole = run("wikitext2", model, fake_data, wikitext_mode="file", detokenize=False)
    assert whole["documents"] == 1 and whole["bytes"] == len(raw.encode()) == whole["tokens"]


def test_wikitext_split_and_detokenizer_on_the_real_file(data_dir):
    raw = (data_dir / "wikitext-2" / "wiki.test.raw").read_text(encoding="utf-8")
    pages = split_pages(raw)
    assert len(pages) == 62 and pages[0].startswith(" = Robert Boulter = ")
    assert "\n".join(pages) == raw[len(" \n"):]  # nothing lost but the leading blank line
    assert "@-@" not in detokenize(pages[0]) and "@-@" in pages[0]
    wikitext = pytest.importorskip("lm_eval.tasks.wikitext.preprocess_wikitext")
    for page in pages:
        assert detokenize(page) == wikitext.wikitext_detokenizer({"page": page})


def test_shards_merge_to_the_unsharded_scores(fake_data):
    scorer = LMScorer(planted(favour=b"ae"), ByteTokenizer())
    for name in ("blimp", "wikitext2"):
        bench = get_benchmark(name)
        settings = EvalSettings()
        whole = bench.run(scorer, settings, None, fake_data)
        parts = [bench.run(scorer, settings, None, fake_data, shard=(i, 3)) for i in range(3)]
        merged = bench.merge(parts, settings)
        assert merged.keys() == whole.keys()
        for key, value in whole.items():
            assert merged[key] == (pytest.approx(value) if isinstance(value, float) else value)
