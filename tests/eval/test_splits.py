"""Selection and report splits: which file or half each benchmark reads, that BLiMP's halves
partition every paradigm stably, that `split=all` gives today's numbers, and the no-leak
property the tournament relies on: scrambling every report-split label leaves a model's
selection scores byte-identical."""

import collections
import hashlib
import json

import pytest

from tests.conftest import run_cli
from tests.eval.conftest import planted, tiny_llama, write_jsonl
from tinylm.errors import TinyLMError
from tinylm.eval.harness import evaluate_model, summary
from tinylm.eval.lm import LMScorer
from tinylm.eval.settings import EvalSettings
from tinylm.eval.tasks import blimp, get_benchmark, read_jsonl
from tinylm.eval.tasks.wikitext import split_pages
from tinylm.tokenizers import ByteTokenizer

PARADIGMS = ("adjunct_island", "wh_vs_that_no_gap")
ALL = "wikitext2,blimp,arc_easy"


@pytest.fixture
def small_data(data_dir, tmp_path):
    """A data dir cut from the real one: 30 pairs of two BLiMP paradigms, 8 ARC-Easy train,
    validation and test questions, and the first two articles of each WikiText-2 file (each
    cut to 700 characters)."""
    root = tmp_path / "small"
    for name in PARADIGMS:
        write_jsonl(root / "blimp" / f"{name}.jsonl",
                    read_jsonl(data_dir / "blimp" / f"{name}.jsonl")[:30])
    for split in ("train", "validation", "test"):
        file = f"arc-easy/ARC-Easy-{split}.jsonl"
        write_jsonl(root / file, read_jsonl(data_dir / file)[:8])
    for name in ("wiki.valid.raw", "wiki.test.raw"):
        pages = split_pages((data_dir / "wikitext-2" / name).read_text(encoding="utf-8"))
        (root / "wikitext-2").mkdir(parents=True, exist_ok=True)
        (root / "wikitext-2" / name).write_text("\n".join(p[:700] for p in pages[:2]),
                                                encoding="utf-8")
    return root


def corrupt_report_split(root):
    """Scramble every report-split label in place: BLiMP's report half swaps good and bad,
    every ARC test answer moves to another choice, WikiText-2's test text is reversed."""
    for path in (root / "blimp").glob("*.jsonl"):
        rows = read_jsonl(path)
        for n, row in enumerate(rows):
            if blimp.split_of(row["UID"], str(row.get("pairID", n))) == "report":
                row["sentence_good"], row["sentence_bad"] = row["sentence_bad"], \
                    row["sentence_good"]
        write_jsonl(path, rows)
    test = root / "arc-easy" / "ARC-Easy-test.jsonl"
    rows = read_jsonl(test)
    for row in rows:
        labels = row["choices"]["label"]
        row["answerKey"] = labels[(labels.index(row["answerKey"]) + 1) % len(labels)]
    write_jsonl(test, rows)
    wiki = root / "wikitext-2" / "wiki.test.raw"
    wiki.write_text(wiki.read_text(encoding="utf-8")[::-1], encoding="utf-8")


def scores_of(results):
    return {b: json.dumps(r["scores"], sort_keys=True) for b, r in results.items()}


def test_blimp_halves_partition_every_paradigm_stably(data_dir):
    every = blimp.load_pairs(data_dir, None)
    selection = blimp.load_pairs(data_dir, None, split="selection")
    report = blimp.load_pairs(data_dir, None, split="report")
    key = lambda pairs: [f"{p['UID']}/{p['pair_id']}" for p in pairs]
    assert not set(key(selection)) & set(key(report))
    assert sorted(key(selection) + key(report)) == sorted(key(every)) and len(every) == 67000
    for half in (selection, report):
        sizes = collections.Counter(p["UID"] for p in half)
        assert len(sizes) == 67 and all(400 <= n <= 600 for n in sizes.values())
    # the same half on every machine and run: the hash of its ids is fixed
    digest = hashlib.sha256("\n".join(key(selection)).encode()).hexdigest()
    assert digest == "e83218b20368f74f82352f78ccc3eddedbaf163031c31a676255812d429740e8"
    # limit applies after the split: the first N pairs of each paradigm's half
    first = blimp.load_pairs(data_dir, 3, split="selection")
    assert len(first) == 67 * 3
    assert key(first)[:3] == key([p for p in selection if p["UID"] == first[0]["UID"]][:3])


def test_each_split_reads_its_own_file(small_data, data_dir):
    scorer = LMScorer(planted(favour=b"e"), ByteTokenizer())
    for split, name in (("selection", "wiki.valid.raw"), ("report", "wiki.test.raw"),
                        ("all", "wiki.test.raw")):
        scores = get_benchmark("wikitext2").run(scorer, EvalSettings(split=split), None,
                                                small_data)
        pages = split_pages((small_data / "wikitext-2" / name).read_text(encoding="utf-8"))
        assert scores["bytes"] == sum(len(p.encode()) for p in pages) and scores["split"] == split
    for split, name in (("selection", "validation"), ("report", "test"), ("all", "test")):
        scores = get_benchmark("arc_easy").run(scorer, EvalSettings(split=split), 5, small_data)
        ids = [row["id"] for row in read_jsonl(small_data / f"arc-easy/ARC-Easy-{name}.jsonl")]
        assert scores["items"]["ids"] == ids[:5]
    bench = get_benchmark("arc_easy")
    assert bench.data_files(data_dir, EvalSettings(split="selection"))[0].name == \
        "ARC-Easy-validation.jsonl"
    with pytest.raises(TinyLMError, match="split must be one of"):
        EvalSettings(split="both")


def test_results_record_the_split_and_missing_files_are_skipped(fake_data, small_data,
                                                                tmp_path):
    model, tok = planted(favour=b"a"), ByteTokenizer()
    results = evaluate_model(model, tok, "m", ALL, {"split": "selection"}, limit=2,
                             cache_dir=tmp_path / "c", data_dir=small_data)
    assert all(r["status"] == "ok" and r["settings"]["split"] == "selection"
               for r in results.values())
    assert list(results["wikitext2"]["data_files"]) == ["wikitext-2/wiki.valid.raw"]
    assert "arc-easy/ARC-Easy-validation.jsonl" in results["arc_easy"]["data_files"]
    flat = summary(results)
    assert flat["split"] == "selection" and "composite_se" in flat
    # fake_data has no validation files: those benchmarks are skipped, naming the file
    missing = evaluate_model(model, tok, "m", ALL, {"split": "selection"},
                             cache_dir=tmp_path / "c", data_dir=fake_data)
    assert missing["blimp"]["status"] == "ok"
    assert missing["arc_easy"]["status"] == "skipped"
    assert "ARC-Easy-validation.jsonl" in missing["arc_easy"]["error"]
    assert "wiki.valid.raw" in missing["wikitext2"]["error"]


def test_split_all_gives_todays_numbers(small_data, tmp_path):
    """The tiny model's numbers before splits existed (tinylm at 48ec403, on this same cut of
    the real data); rel=1e-6 leaves room for another CPU's float32 kernels, not for another
    item set. On the machine that recorded them they are equal to the last bit."""
    golden = {
        "wikitext2": {"ce_loss": 5.545355404599602, "bits_per_byte": 7.716156715826738,
                      "word_perplexity": 479003486151.0899, "tokens": 1358, "bytes": 1408,
                      "documents": 2},
        "blimp": {"acc": 0.15, "pairs": 60, "mean_margin": -1.546204654375712},
        "arc_easy": {"acc": 0.375, "acc_norm": 0.25, "questions": 8, "truncated_questions": 8}}
    results = evaluate_model(tiny_llama(), ByteTokenizer(), "m", ALL, cache_dir=tmp_path,
                             data_dir=small_data)
    for bench, expected in golden.items():
        assert results[bench]["settings"]["split"] == "all"
        for key, value in expected.items():
            assert results[bench]["scores"][key] == pytest.approx(value, rel=1e-6), (bench, key)


def test_scrambled_report_split_leaves_selection_scores_byte_identical(small_data, tmp_path):
    model, tok = tiny_llama(), ByteTokenizer()

    def both(tag):
        return [scores_of(evaluate_model(model, tok, "m", ALL, {"split": split},
                                         cache_dir=tmp_path / tag, data_dir=small_data))
                for split in ("selection", "report")]
    selection, report = both("clean")
    corrupt_report_split(small_data)
    selection_after, report_after = both("corrupt")
    assert selection_after == selection
    for bench in ("wikitext2", "blimp", "arc_easy"):  # the corruption did reach the report half
        assert report_after[bench] != report[bench]


def test_split_shards_merge_to_the_whole(small_data):
    scorer = LMScorer(planted(favour=b"ae"), ByteTokenizer())
    settings = EvalSettings(split="report")
    for name in ("blimp", "wikitext2"):
        bench = get_benchmark(name)
        whole = bench.run(scorer, settings, None, small_data)
        parts = [bench.run(scorer, settings, None, small_data, shard=(i, 2)) for i in range(2)]
        merged = bench.merge(parts, settings)
        assert merged["items"] == whole["items"]
        assert merged["acc" if name == "blimp" else "ce_loss"] == pytest.approx(
            whole["acc" if name == "blimp" else "ce_loss"])


def test_eval_cli_split_flag(small_data, tmp_path):
    out = tmp_path / "report.json"
    run_cli("eval", str(_checkpoint(tmp_path)), "--bench", "arc_easy,wikitext2", "--limit", "2",
            "--split", "selection", "--no-isolation", "--cache-dir", str(tmp_path / "c"),
            "--data-dir", str(small_data), "-o", str(out))
    report = json.loads(out.read_text())
    assert report["settings"]["split"] == "selection" and report["summary"]["split"] == \
        "selection"
    assert report["benchmarks"]["arc_easy"]["scores"]["items"]["ids"] == [
        row["id"] for row in read_jsonl(small_data / "arc-easy/ARC-Easy-validation.jsonl")[:2]]
    bad = run_cli("eval", str(tmp_path), "--split", "both", check=False)
    assert bad.returncode == 2 and "split must be one of" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def _checkpoint(tmp_path):
    from tests.eval.conftest import TINY
    from tinylm.train.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path / "ckpt", family="llama", model_config=TINY,
                           model_state=tiny_llama().state_dict(), tokenizer=ByteTokenizer(),
                           extra_meta={"step": 1})
