"""Cross-check against lm-evaluation-harness: the same checkpoint through lm_eval (with the
adapter and the local task configs) and through tinylm's harness gives the same BLiMP, ARC-Easy
and WikiText-2 numbers. Skipped only when lm_eval is not installed; benchmarks/bench_eval.py runs
the same comparison on the full sets."""

import pytest

pytest.importorskip("lm_eval")

from tests.eval.conftest import tiny_llama
from tinylm.eval.harness import evaluate_checkpoint
from tinylm.eval.lm_eval_adapter import TinyLMEvalLM, run_lm_eval, task_dir
from tinylm.tokenizers import ByteTokenizer

PARADIGMS = ["adjunct_island", "principle_A_case_1"]


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))


def test_tinylm_and_lm_eval_agree(tiny_ckpt, data_dir, tmp_path, hf_cache):
    limit = 2
    lm = TinyLMEvalLM(pretrained=str(tiny_ckpt), batch_size=16)
    tasks = [f"tinylm_blimp_{p}" for p in PARADIGMS] + ["tinylm_arc_easy", "tinylm_wikitext2"]
    theirs = run_lm_eval(lm, tasks, limit=limit, data_dir=data_dir)["results"]
    ours = evaluate_checkpoint(tiny_ckpt, "blimp,arc_easy,wikitext2",
                               {"stride": 64, "blimp_ties": "correct"}, data_dir,
                               tmp_path / "cache", limit=limit, isolate=False)
    blimp = ours["blimp"]["scores"]["by_paradigm"]
    for p in PARADIGMS:
        assert blimp[p]["acc"] == pytest.approx(theirs[f"tinylm_blimp_{p}"]["acc,none"])
    arc = ours["arc_easy"]["scores"]
    for metric in ("acc", "acc_norm", "acc_bytes"):
        assert arc[metric] == pytest.approx(theirs["tinylm_arc_easy"][f"{metric},none"])
    wiki = ours["wikitext2"]["scores"]
    for metric in ("bits_per_byte", "byte_perplexity", "word_perplexity"):
        assert wiki[metric] == pytest.approx(theirs["tinylm_wikitext2"][f"{metric},none"],
                                             rel=1e-5)


def test_both_engines_and_task_rendering(data_dir, tmp_path):
    model, tok = tiny_llama(), ByteTokenizer()
    reference = TinyLMEvalLM(model=model, tokenizer=tok, batch_size=3)
    fast = TinyLMEvalLM(model=model, tokenizer=tok, engine="tinylm")
    requests = [(None, [256], list(b" Hello there.")), (None, list(b"Q: 2+2?\nA:"), list(b" 4")),
                (None, list(range(100)), list(b" long"))]  # the last one is left-truncated
    for (a, ga), (b, gb) in zip(reference._loglikelihood_tokens(requests),
                                fast._loglikelihood_tokens(requests)):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    folder = task_dir(data_dir, tmp_path / "tasks")
    text = (folder / "tinylm_arc_easy.yaml").read_text()
    assert "@DATA_DIR@" not in text and str(data_dir) in text
    assert len(list(folder.glob("tinylm_blimp_*.yaml"))) == 67
