"""The harness: isolation (a hanging or crashing benchmark loses nobody else's results), the
cache (nothing scored twice), model hashes, skipped data, and the composite."""

import dataclasses
import importlib.util
import time
from pathlib import Path

import pytest

from tests.eval.conftest import tiny_llama
from tinylm.eval import harness
from tinylm.eval.harness import composite, evaluate_checkpoint, evaluate_model, summary
from tinylm.eval.results import model_info
from tinylm.eval.tasks import BENCHMARKS
from tinylm.tokenizers import ByteTokenizer
from tinylm.train.checkpoint import read_meta


@pytest.fixture
def plugins():
    """Registers test_quick / test_sleepy / test_crashy, as a user's benchmark file would."""
    path = Path(__file__).with_name("plugin_benchmarks.py")
    spec = importlib.util.spec_from_file_location("eval_test_plugins", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    yield
    for name in ("test_quick", "test_sleepy", "test_crashy"):
        BENCHMARKS.pop(name, None)


def test_hanging_and_crashing_benchmarks_do_not_lose_the_others(tiny_ckpt, fake_data, plugins,
                                                                tmp_path):
    started = time.perf_counter()
    results = evaluate_checkpoint(tiny_ckpt, "test_sleepy,blimp,test_crashy,test_quick",
                                  data_dir=fake_data, cache_dir=tmp_path / "cache", timeout=8,
                                  jobs=2)
    assert time.perf_counter() - started < 60
    assert list(results) == ["test_sleepy", "blimp", "test_crashy", "test_quick"]
    assert results["test_sleepy"]["status"] == "timeout"
    assert results["test_crashy"]["status"] == "crashed" and "7" in results["test_crashy"]["error"]
    assert results["test_quick"]["status"] == "ok"
    assert results["test_quick"]["scores"] == {"acc": 1.0, "context": 64}
    assert results["blimp"]["status"] == "ok" and results["blimp"]["scores"]["pairs"] == 3
    again = evaluate_checkpoint(tiny_ckpt, "blimp,test_quick", data_dir=fake_data,
                                cache_dir=tmp_path / "cache")
    assert all(r["cached"] for r in again.values())  # finished work was kept
    in_memory = evaluate_model(tiny_llama(), ByteTokenizer(), "mem", "test_quick",
                               data_dir=fake_data, cache_dir=tmp_path / "c2", isolate=True)
    assert in_memory["test_quick"]["status"] == "ok"


def counting(monkeypatch, names):
    calls = {n: 0 for n in names}
    for name in names:
        bench = BENCHMARKS[name]

        def run(*args, _run=bench.run, _name=name, **kwargs):
            calls[_name] += 1
            return _run(*args, **kwargs)
        monkeypatch.setitem(BENCHMARKS, name, dataclasses.replace(bench, run=run))
    return calls


def test_second_run_is_a_cache_hit_and_settings_invalidate_only_their_benchmark(
        fake_data, tmp_path, monkeypatch):
    calls = counting(monkeypatch, ["wikitext2", "blimp", "arc_easy"])
    model, tok = tiny_llama(), ByteTokenizer()
    args = dict(data_dir=fake_data, cache_dir=tmp_path)
    first = evaluate_model(model, tok, "m", **args)
    assert calls == {"wikitext2": 1, "blimp": 1, "arc_easy": 1}
    assert not any(r["cached"] for r in first.values())
    second = evaluate_model(model, tok, "m", **args)
    assert calls == {"wikitext2": 1, "blimp": 1, "arc_easy": 1}  # nothing rescored
    assert all(r["cached"] for r in second.values())
    assert {b: r["scores"] for b, r in second.items()} == {b: r["scores"] for b, r in
                                                           first.items()}
    evaluate_model(model, tok, "m", settings={"shots": 1}, **args)
    assert calls == {"wikitext2": 1, "blimp": 1, "arc_easy": 2}  # only ARC depends on shots
    evaluate_model(model, tok, "m", limit=1, **args)
    assert calls == {"wikitext2": 2, "blimp": 2, "arc_easy": 3}  # the limit is in every key
    evaluate_model(tiny_llama(seed=1), tok, "m", "blimp", **args)  # other weights: rescored
    assert calls["blimp"] == 3


def test_result_documents_and_hashes(tiny_ckpt, fake_data, tmp_path):
    results = evaluate_checkpoint(tiny_ckpt, data_dir=fake_data, cache_dir=tmp_path,
                                  isolate=False)
    meta = read_meta(tiny_ckpt)
    for name, result in results.items():
        assert result["status"] == "ok" and result["benchmark"] == name
        assert result["model"]["sha256"] == meta["files"]["model.safetensors"]
        assert len(result["data_sha256"]) == 64 and result["harness_version"]
        assert result["wall_seconds"] >= 0 and "limit" in result and "settings" in result
    assert results["arc_easy"]["settings"] == {"shots": 0, "fewshot_seed": 1234, "split": "all"}
    # an in-memory copy hashes like the saved file, so its scores are found in the cache
    from tinylm.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_ckpt)
    assert model_info(ckpt.build_model(), ckpt.tokenizer).sha256 == \
        meta["files"]["model.safetensors"]
    again = evaluate_model(ckpt.build_model(), ckpt.tokenizer, data_dir=fake_data,
                           cache_dir=tmp_path)
    assert all(r["cached"] for r in again.values())


def test_missing_data_is_skipped_with_a_message(fake_data, tmp_path):
    results = evaluate_model(tiny_llama(), ByteTokenizer(), "m", "arc_challenge,blimp",
                             data_dir=fake_data, cache_dir=tmp_path)
    assert results["arc_challenge"]["status"] == "skipped"
    assert "ARC-Challenge-test.jsonl" in results["arc_challenge"]["error"]
    assert results["blimp"]["status"] == "ok"
    assert "composite" not in summary(results)


def test_summary_and_composite():
    ok = lambda scores: {"status": "ok", "scores": scores}
    results = {"wikitext2": ok({"ce_loss": 3.0, "bits_per_byte": 1.5, "byte_perplexity": 2.8,
                                "word_perplexity": 99.0}),
               "blimp": ok({"acc": 0.7, "ties": 2}),
               "arc_easy": ok({"acc": 0.4, "acc_norm": 0.3, "acc_bytes": 0.3, "shots": 5})}
    flat = summary(results)
    assert flat["composite"] == pytest.approx((3.0 + 0.3 + 0.6) / 3) == composite(3.0, .7, .4)
    assert flat["arc_metric"] == "acc" and flat["arc_shots"] == 5
    assert summary(results, "acc_norm")["composite"] == pytest.approx((3.0 + 0.3 + 0.7) / 3)
    with pytest.raises(Exception, match="ARC metric"):
        summary(results, "f1")
    assert harness.parse_benches(" blimp, arc_easy ,") == ["blimp", "arc_easy"]
    with pytest.raises(Exception, match="unknown benchmark"):
        harness.parse_benches("mmlu")
