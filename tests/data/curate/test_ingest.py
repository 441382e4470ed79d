"""Ingest: every format into rows that keep their provenance; bad inputs refused in one line."""

import csv
import gzip
import json

import pytest

from tests.conftest import run_cli
from tinylm.data.curate.dataset import text_sha256
from tinylm.data.curate.ingest import IngestConfig, ingest
from tinylm.data.sources import resolve_dataset
from tinylm.errors import TinyLMError
from tinylm.io import sha256_file


def quiet(*_):
    pass


def test_text_splits_and_line_numbers(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("first doc\nstill first\n\n\nsecond doc\n\nthird\n")
    eot = tmp_path / "eot.txt.gz"
    with gzip.open(eot, "wt") as f:
        f.write("story one\nmore\n<|endoftext|>\nstory two\n<|endoftext|>\n")
    ds = ingest(IngestConfig([str(blank), str(eot)], str(tmp_path / "out"), source="mine",
                             author="ana"), log=quiet)
    rows = list(ds.iter_rows())
    assert [(r["line"], r["text"]) for r in rows] == [
        (1, "first doc\nstill first"), (5, "second doc"), (7, "third"),
        (1, "story one\nmore"), (4, "story two")]
    assert {r["source"] for r in rows} == {"mine"} and ds.author == "ana"
    assert all(r["sha256"] == text_sha256(r["text"]) for r in rows)
    assert rows[3]["file"] == str(eot) and rows[3]["id"] == "mine/eot.txt.gz:1"
    lines = ingest(IngestConfig([str(blank)], str(tmp_path / "lines"), split="lines"),
                   log=quiet)
    assert [r["line"] for r in lines.iter_rows()] == [1, 2, 5, 7]


def test_jsonl_csv_parquet_keep_other_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": f"doc {i}", "url": f"u{i}"})
                               for i in range(3)) + "\n")
    table = pa.table({"body": [f"pq {i}" for i in range(5)], "n": list(range(5))})
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=2)  # 3 row groups
    with open(tmp_path / "c.csv", "w", newline="") as f:
        csv.writer(f).writerows([["body", "score"], ["x, with a comma", "3"], ["y", "5"]])
    ds = ingest(IngestConfig([str(tmp_path / n) for n in ("a.jsonl", "b.parquet", "c.csv")],
                             str(tmp_path / "out"), text_field="body"), log=quiet)
    rows = list(ds.iter_rows())
    assert [r["text"] for r in rows][:4] == ["doc 0", "doc 1", "doc 2", "pq 0"]
    assert rows[1]["meta"] == {"url": "u1"} and rows[1]["line"] == 2
    assert rows[7]["meta"] == {"n": 4} and rows[7]["line"] == 5  # row 5 of 3 row groups
    assert rows[8] == {**rows[8], "text": "x, with a comma", "meta": {"score": "3"}}
    sources = ds.info["sources"]
    assert [s["format"] for s in sources] == ["jsonl", "parquet", "csv"]
    assert all(s["sha256"] == sha256_file(s["file"]) for s in sources)
    assert [s["rows"] for s in sources] == [3, 5, 2]


def test_named_corpora_match_the_readers(tmp_path, data_dir):
    fineweb = ingest(IngestConfig(["fineweb-edu"], str(tmp_path / "fw"), data_dir=data_dir),
                     log=quiet)
    rows = list(fineweb.iter_rows())
    assert len(rows) == 150 and set(rows[0]["meta"]) == {"score", "reasoning", "decision",
                                                          "error"}
    assert [r["text"] for r in rows] == list(resolve_dataset("fineweb-edu",
                                                             data_dir).documents())
    stories = ingest(IngestConfig(["tinystories"], str(tmp_path / "ts"), data_dir=data_dir,
                                  rows_per_part=1000), log=quiet)
    assert stories.row_count() == 2316 and len(stories.parts) == 3  # the whole stories only
    assert stories.verify() == stories.manifest_sha256


@pytest.mark.parametrize("args, message", [
    (["nope.txt"], "input not found: nope.txt"),
    (["{tmp}/x.docx"], "unknown file type"),
    (["{tmp}/bad.csv"], "no 'text' column"),
    (["{tmp}/x.txt", "--split", "words"], "--split must be one of"),
    (["{tmp}/x.txt", "--author", "a b"], "--author 'a b'"),
    (["{tmp}/x.txt", "--out", "{tmp}/notours"], "is not a tinylm dataset"),
    (["hf:some/thing"], "hf:some/thing"),
])
def test_bad_inputs_one_line(tmp_path, args, message, capsys, monkeypatch):
    """Through the CLI's own main() (one subprocess run below checks the real command)."""
    from tinylm.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "x.docx").write_text("x")
    (tmp_path / "x.txt").write_text("hello\n")
    (tmp_path / "bad.csv").write_text("body\nhello\n")
    (tmp_path / "notours").mkdir()
    (tmp_path / "notours" / "keep.txt").write_text("mine")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    assert main(["data", "ingest", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("tinylm: error:")
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "notours" / "keep.txt").read_text() == "mine"


def test_cli_ingest_and_refusal(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    out = run_cli("data", "ingest", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "d"),
                  "--author", "ana", "--source", "c4").stdout
    assert "2 rows in 1 part(s), author ana" in out
    proc = run_cli("data", "ingest", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "d"),
                   check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "pass --force" in proc.stderr and "Traceback" not in proc.stderr


def test_existing_dataset_needs_force(tmp_path):
    (tmp_path / "x.txt").write_text("one\n\ntwo\n")
    config = IngestConfig([str(tmp_path / "x.txt")], str(tmp_path / "out"))
    first = ingest(config, log=quiet)
    with pytest.raises(TinyLMError, match="pass --force"):
        ingest(config, log=quiet)
    config.force = True
    assert ingest(config, log=quiet).row_count() == first.row_count() == 2


def test_invalid_utf8_is_one_line(tmp_path):
    (tmp_path / "x.txt").write_bytes(b"ok\n\xff\xfe bad\n")
    with pytest.raises(TinyLMError, match="not valid UTF-8"):
        ingest(IngestConfig([str(tmp_path / "x.txt")], str(tmp_path / "out")), log=quiet)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp left
