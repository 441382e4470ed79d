"""The instruct metric (eval/tasks/gsm8k_chat.py) and the instruct objective of the tournament."""

from __future__ import annotations

import math

import pytest

from tinylm.eval.harness import summary
from tinylm.eval.settings import EvalSettings, ScoringConfig
from tinylm.eval.tasks import gsm8k_chat


def test_halves_are_disjoint_and_cover_the_test_set(data_dir):
    every = gsm8k_chat.load_items(data_dir, "all", None)
    sel = gsm8k_chat.load_items(data_dir, "selection", None)
    rep = gsm8k_chat.load_items(data_dir, "report", None)
    assert len(every) == 1319 and len(sel) + len(rep) == 1319
    assert not {r["id"] for r in sel} & {r["id"] for r in rep}


def test_answer_line_parsing():
    assert gsm8k_chat.final_number("so 3 + 4 = 7\n#### 7") == "7"
    assert gsm8k_chat.final_number("#### 1,200") == "1200"
    assert gsm8k_chat.final_number("the answer is 7") is None


def test_run_scores_reference_loss_and_format(instruct_world, data_dir):
    from tinylm.eval.lm import LMScorer
    from tinylm.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(instruct_world["bytes_base"])
    scorer = LMScorer(ckpt.build_model(), ckpt.tokenizer)
    scores = gsm8k_chat.run(scorer, EvalSettings(split="selection"), 3, data_dir)
    assert scores["questions"] == 3 and scores["generated"] == 3
    # a random byte model: about ln(257) nats per answer byte, and no turn ended
    assert abs(scores["ce_loss"] - math.log(257)) < 1.0 and scores["ce_loss_se"] > 0
    assert scores["ended"] == 0.0 and len(scores["items"]["ended"]) == 3


def _ok(scores, split="selection"):
    return {"status": "ok", "scores": scores, "settings": {"split": split}}


def test_instruct_composite_is_the_five_term_mean():
    results = {"wikitext2": _ok({"ce_loss": 3.0, "ce_loss_se": 0.1, "bits_per_byte": 1.5,
                                 "byte_perplexity": 2.0, "word_perplexity": 9.0}),
               "blimp": _ok({"acc": 0.6, "acc_se": 0.01, "ties": 0}),
               "arc_easy": _ok({m: 0.3 for m in ("acc", "acc_norm", "acc_bytes")}),
               "gsm8k_chat": _ok({"ce_loss": 2.0, "ce_loss_se": 0.05, "bits_per_byte": 1.0,
                                  "ended": 0.25, "format": 0.0, "acc": 0.0})}
    flat = summary(results)
    assert flat["composite"] == pytest.approx((3.0 + 0.4 + 0.7) / 3)
    assert flat["instruct_composite"] == pytest.approx((3.0 + 0.4 + 0.7 + 2.0 + 0.75) / 5)
    assert flat["gsm8k_chat_ended"] == 0.25 and "instruct_composite_se" not in flat


def test_instruct_objective_adds_the_benchmark(data_dir):
    from tinylm.errors import TinyLMError
    from tinylm.merge.scoring import make_scorer

    scorer, described = make_scorer(ScoringConfig(limit=2), data_dir, objective="instruct")
    assert described["benches"].endswith("gsm8k_chat") and described["objective"] == "instruct"
    assert scorer.keywords["objective"] == "instruct"
    assert "objective" not in make_scorer(ScoringConfig(limit=2), data_dir)[1]
    with pytest.raises(TinyLMError, match="objective"):
        make_scorer(ScoringConfig(), data_dir, objective="chatty")
