"""The engine: datatrove with 2 workers writes exactly what the in-process run writes, and
token shards joined in part order are the bytes pack.py writes for the same documents."""

import json
import subprocess
import sys

import numpy as np

from tinylm.data.curate.dataset import open_dataset
from tinylm.data.curate.engine import tokenize_parts
from tinylm.data.pack import load_or_build, split_documents
from tinylm.data.sources import resolve_dataset
from tinylm.tokenizers import ByteTokenizer


def rows_files(path) -> dict:
    """The data files of a dataset's manifest (dataset.json differs by time and engine)."""
    files = open_dataset(path).manifest["files"]
    return {k: v for k, v in files.items() if k.startswith("rows/")}


def test_one_and_two_workers_same_data(tmp_path, stories):
    """1 worker in this process; 2 datatrove workers through the real command (no torch
    there, so datatrove forks them)."""
    from tinylm.data.curate.filter import FilterConfig, filter_dataset
    from tinylm.data.curate.shards import write_shards

    one = filter_dataset(FilterConfig(str(stories), str(tmp_path / "w1"), score_column="score",
                                      keep_top=60, author="bob"), log=lambda *_: None)
    ByteTokenizer().save(tmp_path / "tok.json")
    write_shards(one.path, tmp_path / "tok.json", tmp_path / "shards1", val_permille=200)
    commands = [["data", "filter", str(stories), "--out", str(tmp_path / "w2"),
                 "--score-column", "score", "--keep-top", "60", "--workers", "2",
                 "--author", "bob"],
                ["data", "tokenize", str(one.path), "--tokenizer", str(tmp_path / "tok.json"),
                 "--out", str(tmp_path / "shards2"), "--workers", "2", "--val-permille", "200"]]
    script = (f"import sys; from tinylm.cli import main; "
              f"sys.exit(max(main(c) for c in {commands!r}))")  # two commands, one start-up
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                   timeout=600)
    two = open_dataset(tmp_path / "w2")
    assert rows_files(one.path) == rows_files(two.path)
    assert len(rows_files(one.path)) == 5  # part i -> part i
    steps = [one.info["history"][-1], two.info["history"][-1]]
    assert (steps[0]["engine"], steps[1]["engine"]) == ("inprocess", "datatrove")
    assert steps[0]["rows_out"] == steps[1]["rows_out"] == one.row_count() < 40

    first, second = tmp_path / "shards1", tmp_path / "shards2"
    bins = sorted(p.name for p in first.glob("*.bin"))
    assert bins == sorted(p.name for p in second.glob("*.bin")) and len(bins) == 10
    assert all((first / b).read_bytes() == (second / b).read_bytes() for b in bins)
    info = json.loads((second / "shards.json").read_text())
    assert info["manifest_sha256"] == one.manifest_sha256 and info["engine"] == "datatrove"
    assert info["val"] > 0 and info["train"] > 0


def test_pack_of_a_dataset_is_pack_of_its_documents(tmp_path, stories):
    tok = ByteTokenizer()
    resolved = resolve_dataset(str(stories))
    assert resolved.curated is not None
    for split in ("train", "val"):
        packed = load_or_build(str(stories), split, tok, cache_dir=tmp_path / "cache",
                               val_permille=200)
        docs = list(split_documents(resolved, split, 200))
        expected = [t for d in docs for t in (*d.encode(), tok.eos_id)]
        assert np.array_equal(np.asarray(packed.tokens), np.array(expected, dtype=np.uint16))
        assert packed.meta["documents"] == len(docs) > 0
    counts = tokenize_parts(open_dataset(stories), tok, tmp_path / "parts", 200)
    assert counts["parts"] == 5 and counts["documents_train"] + counts["documents_val"] == 40
