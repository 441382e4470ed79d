"""The detectors one by one, on rows written for each case, and their commands' bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tinylm.data.curate.dataset import DatasetWriter, make_row, open_dataset, read_check
from tinylm.data.curate.textnorm import (
    _python_ngram_hash,
    dedup_key,
    lm_eval_words,
    ngram_hashes,
)

STORY = ("Once upon a time there was a little dog named Max who loved to run in the big green "
         "park near his house every single morning with his best friend Sam and they "
         "played with a red ball until the sun went down and it was time to go home for "
         "dinner with the whole family around the warm kitchen table")


def write_dataset(path, rows, name="t", rows_per_part=1000):
    with DatasetWriter(path, name=name, author="ana", rows_per_part=rows_per_part) as w:
        for n, (source, text) in enumerate(rows, 1):
            w.write(make_row(text, source, f"{source}.txt", n))
    return open_dataset(path)


def first_json(path):
    with open(path, encoding="utf-8") as f:
        return json.loads(f.readline())


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tinylm", *args], capture_output=True,
                          text=True, timeout=300, check=False)


# ------------------------------------------------------------------------- normalisation

def test_exact_key_ignores_case_space_and_punctuation_only():
    assert dedup_key("Hello,  World!") == dedup_key("hello world")
    assert dedup_key("“Quoted” — text…") == dedup_key("quoted text")
    assert dedup_key("hello world 1") != dedup_key("hello world 2")


def test_ngram_hash_numpy_and_python_agree():
    words = lm_eval_words(STORY * 2)
    fast = ngram_hashes(words, 13)
    assert len(fast) == len(words) - 12
    assert [int(h) for h in fast[:5]] == [_python_ngram_hash(words[i:i + 13]) for i in
                                          range(5)]


# ------------------------------------------------------------------------- contamination

def test_13_gram_convention_and_short_items(data_dir):
    from tinylm.data.curate.contamination import benchmark_index

    index = benchmark_index(data_dir)
    item = first_json(data_dir / "arc-easy" / "ARC-Easy-test.jsonl")
    question = lm_eval_words(item["question"])
    assert len(question) >= 13
    # 13 consecutive words, re-cased and re-punctuated as lm-eval's Janitor ignores, hit ...
    snippet = " ".join(question[:13]).upper() + "!"
    assert {h["benchmark"] for h in index.hits(f"Notes. {snippet} The end.")} == \
        {"arc-easy"}
    # ... 12 do not (a sentence of 12 words is not a whole ARC item either).
    assert index.hits("Notes: " + " ".join(question[:12]) + " and more words here") == []
    # A BLiMP sentence is shorter than 13 words: matched whole, as a sentence of the row.
    pair = first_json(data_dir / "blimp" / "adjunct_island.jsonl")
    hits = index.hits(f"{STORY}. {pair['sentence_good']} Then they slept.")
    assert [h["benchmark"] for h in hits] == ["blimp"]
    assert index.hits(STORY) == []


def test_check_dataset_and_decontaminate(tmp_path, data_dir):
    from tinylm.data.curate.contamination import check_dataset, decontaminate

    pair = first_json(data_dir / "blimp" / "adjunct_island.jsonl")
    ds = write_dataset(tmp_path / "d", [("tinystories", STORY),
                                        ("tinystories", f"{STORY}. {pair['sentence_good']}")])
    payload = check_dataset(ds, data_dir)
    assert payload["hits"] == 1 and payload["by_benchmark"]["blimp"]["rows"] == 1
    assert read_check(ds, "contamination")["rows_hit"] == ["tinystories/tinystories.txt:2"]
    report = decontaminate(ds, tmp_path / "clean", data_dir)
    clean = open_dataset(tmp_path / "clean")
    assert [r["text"] for r in clean.iter_rows()] == [STORY] and report["kept"] == 1
    assert read_check(clean, "contamination")["hits"] == 0
    assert check_dataset(clean, data_dir)["hits"] == 0  # and a fresh scan agrees


# ------------------------------------------------------------------------- PII, secrets

def test_pii_patterns_and_secrets_are_found_and_redacted():
    from tinylm.data.curate.pii import scan_text

    text = ("Mail jane.roe@example.org or call (555) 201-3344, +44 20 7946 0958, "
            "555.867.5309.\nkey = AKIAQWERTYUIOPASDFGH\n-----BEGIN RSA PRIVATE KEY-----\n"
            "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
            "-----END RSA PRIVATE KEY-----")
    found = scan_text(text)
    kinds = [f["kind"] for f in found]
    assert kinds.count("email") == 1 and kinds.count("phone") == 3
    assert "secret: AWS Access Key" in kinds and "secret: Private Key" in kinds
    blob = json.dumps(found)
    for value in ("jane.roe", "201-3344", "7946 0958", "QWERTYUIOPASDFGH"):
        assert value not in blob
    # Years, prices and plain prose are not PII.
    assert scan_text("In 1999-2000 it cost $1,234,567.89; order 12345678901234.") == []
    assert scan_text(STORY) == []


# ------------------------------------------------------------------------- dedup

def test_dedup_command_keeps_first_of_each_cluster(tmp_path):
    near = STORY.replace("little dog", "small dog")
    other = STORY.replace("dog named Max", "cat named Tom").replace("park", "garden") \
        .replace("red ball", "blue kite").replace("dinner", "supper")
    rows = [("a", STORY), ("a", other), ("a", STORY.upper() + " !"), ("a", near)]
    write_dataset(tmp_path / "d", rows, rows_per_part=2)
    ref = write_dataset(tmp_path / "ref", [("wiki", other)])
    proc = cli("data", "dedup", str(tmp_path / "d"), "-o", str(tmp_path / "out"),
               "--against", f"wiki={ref.path}", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    out = open_dataset(tmp_path / "out")
    assert [r["text"] for r in out.iter_rows()] == [STORY]
    report = read_check(out, "dedup")
    assert (report["exact_duplicate_rows"], report["near_duplicate_rows"]) == (1, 1)
    assert report["clone_rows"] == {"wiki": 1}
    assert out.info["history"][-1]["step"] == "dedup"


@pytest.mark.parametrize("args, message", [
    (["data", "dedup", "{tmp}/nothing", "-o", "{tmp}/o"], "dataset not found"),
    (["data", "dedup", "{tmp}/d", "-o", "{tmp}/plain"], "is not a tinylm dataset"),
    (["data", "dedup", "{tmp}/d", "-o", "{tmp}/o", "--against", "x={tmp}/plain"],
     "is not a dataset folder"),
])
def test_bad_inputs_one_line_and_nothing_written(tmp_path, args, message):
    write_dataset(tmp_path / "d", [("a", STORY)])
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    proc = cli(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinylm: error:") and message in lines[0]
    assert not (tmp_path / "o").exists()
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["notes.txt"]


def test_changed_rows_void_the_audit(tmp_path, data_dir):
    from tinylm.data.curate.audit import audit

    ds = write_dataset(tmp_path / "d", [("a", STORY)])
    assert audit(ds, data_dir=data_dir, html=False)["passed"]
    assert read_check(ds, "audit")["passed"] is True
    part = ds.parts[0]
    part.write_text(part.read_text().replace("Max", "Rex"))
    proc = cli("data", "audit", str(ds.path))
    assert proc.returncode == 2 and "changed since its manifest" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["data", "dedup", "{tmp}/d", "-o", "{tmp}/d"], "is the input dataset"),
    (["data", "dedup", "{tmp}/d", "-o", "{tmp}/o", "--threshold", "1.5"], "--threshold"),
    (["data", "audit", "{tmp}/d", "--workers", "0"], "--workers"),
    (["data", "audit", "{tmp}/d", "--private", "=c4"], "NAME=PATH"),
    (["data", "decontaminate", "{tmp}/d", "-o", "{tmp}/o", "--data-dir", "{tmp}/plain"],
     "benchmark file(s)"),
])
def test_bad_settings_in_process(tmp_path, capsys, args, message):
    from tinylm.cli import main

    write_dataset(tmp_path / "d", [("a", STORY)])
    (tmp_path / "plain").mkdir()
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "d" / "checks").exists()
