"""`tinylm train --data DATASET_DIR`: refuses contaminated data; a curated dataset trains."""

import json
import sys
from pathlib import Path

import pytest

from tinylm.data.curate.dataset import open_dataset, write_check
from tinylm.data.curate.rank import RankConfig, rank_dataset
from tinylm.data.curate.training import check_training_data
from tinylm.errors import TinyLMError


def test_gate(stories, monkeypatch):
    notes = []
    # the decontamination module is not importable: a clear refusal, not an ImportError
    monkeypatch.setitem(sys.modules, "tinylm.data.curate.contamination", None)
    with pytest.raises(TinyLMError, match="no contamination check of these bytes; run "
                                          "`tinylm data decontaminate"):
        check_training_data(str(stories))
    check_training_data(str(stories), allow_contaminated=True, log=notes.append)
    assert "not checked for contamination" in notes[-1]

    dataset = open_dataset(stories)
    write_check(dataset, "contamination", {"hits": 2, "by_benchmark": {"arc-easy": 2}})
    with pytest.raises(TinyLMError, match="2 row.*overlap benchmark test data.*arc-easy: 2 rows"):
        check_training_data(str(stories))
    check_training_data(str(stories), allow_contaminated=True, log=notes.append)
    assert notes[-1].startswith("warning:")

    write_check(dataset, "contamination", {"hits": 0, "by_benchmark": {}})
    assert check_training_data(str(stories)) == str(Path(stories).resolve())
    assert check_training_data(f"{stories}:3,tinystories:1") == \
        f"{Path(stories).resolve()}:0.75,tinystories:0.25"
    with pytest.raises(TinyLMError, match="has no curriculum order"):
        check_training_data(str(stories), curriculum=True)
    with pytest.raises(TinyLMError, match="--curriculum needs --data to be one dataset"):
        check_training_data("tinystories", curriculum=True)


def test_a_check_of_other_bytes_does_not_count(tmp_path, stories, monkeypatch):
    monkeypatch.setitem(sys.modules, "tinylm.data.curate.contamination", None)
    write_check(open_dataset(stories), "contamination", {"hits": 0})
    check = json.loads((stories / "checks" / "contamination.json").read_text())
    check["manifest_sha256"] = "0" * 64
    (stories / "checks" / "contamination.json").write_text(json.dumps(check))
    with pytest.raises(TinyLMError, match="no contamination check of these bytes"):
        check_training_data(str(stories))


@pytest.mark.slow
def test_contaminated_refused_curated_trains(tmp_path, stories, capsys):
    """Through the CLI's main() in this process (torch is loaded here already)."""
    from tinylm.cli import main

    ranked = rank_dataset(RankConfig(str(stories), str(tmp_path / "ranked"), buckets=4),
                          log=lambda *_: None)
    write_check(ranked, "contamination", {"hits": 1, "by_benchmark": {"wikitext-2": 1}})
    run = tmp_path / "run"
    args = ["train", "--preset", "debug", "--data", str(ranked.path), "--steps", "4",
            "--out", str(run), "--no-progress", "--val-permille", "200", "--curriculum",
            "--eval-every", "0", "--seq-len", "32", "--batch-size", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "overlap benchmark test data" in err and err.count("\n") == 1 and not run.exists()

    write_check(ranked, "contamination", {"hits": 0, "by_benchmark": {}})
    assert main(args) == 0
    spec = json.loads((run / "run.json").read_text())["spec"]
    assert spec["curriculum"] is True and spec["data"] == str(ranked.path.resolve())
    assert (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m for m in lines if "loss" in m]
    assert losses[-1]["step"] == 4 and losses[-1]["loss"] > 0
