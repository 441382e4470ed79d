"""No report-split item is read while choosing: a tournament run twice, the second time with
every report-split label and continuation scrambled, picks the same champion from the same
scores (selection is blind to the report split)."""

import json
import shutil

import pytest

from tests.conftest import run_cli
from tests.eval.test_splits import corrupt_report_split
from tinylm.eval.tasks import read_jsonl
from tinylm.train.checkpoint import load_checkpoint

TOURNAMENT = ["--top-k", "2", "--generations", "1", "--limit", "12", "--workers", "1"]


@pytest.fixture
def data(data_dir, tmp_path):
    """A data dir cut from the real one: three BLiMP paradigms, 40 ARC questions per split,
    three WikiText-2 articles per file."""
    from tests.eval.conftest import write_jsonl
    from tinylm.eval.tasks.wikitext import split_pages

    root = tmp_path / "data"
    for name in ("adjunct_island", "anaphor_gender_agreement", "wh_vs_that_no_gap"):
        write_jsonl(root / "blimp" / f"{name}.jsonl",
                    read_jsonl(data_dir / "blimp" / f"{name}.jsonl")[:60])
    for split in ("train", "validation", "test"):
        file = f"arc-easy/ARC-Easy-{split}.jsonl"
        write_jsonl(root / file, read_jsonl(data_dir / file)[:40])
    (root / "wikitext-2").mkdir(parents=True)
    for name in ("wiki.valid.raw", "wiki.test.raw"):
        pages = split_pages((data_dir / "wikitext-2" / name).read_text(encoding="utf-8"))
        (root / "wikitext-2" / name).write_text("\n".join(p[:1500] for p in pages[:3]),
                                                encoding="utf-8")
    return root


@pytest.mark.slow
def test_a_scrambled_report_split_changes_no_choice(debug_run, data, tmp_path):
    outcomes = []
    for tag in ("clean", "scrambled"):
        if tag == "scrambled":
            corrupt_report_split(data)
        run = tmp_path / tag
        shutil.copytree(debug_run, run)
        run_cli("tournament", str(run), *TOURNAMENT, "--data-dir", str(data),
                env={"TINYLM_CACHE": str(tmp_path / f"cache-{tag}")})
        state = json.loads((run / "tournament" / "state.json").read_text())
        outcomes.append(({e["name"]: e["metrics"] for e in state["entries"]},
                         load_checkpoint(run / "champion").meta["recipe"]))
        assert all(e["metrics"].get("split") == "selection" for e in state["entries"])
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0][0]) >= 5  # checkpoints, merges and baselines were all compared
