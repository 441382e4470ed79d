"""End to end through the command line: `tinylm eval` on a tiny checkpoint scores all three
benchmarks (--limit) into a JSON report with the composite, a second run is served from the
cache, and `tinylm leaderboard` ranks the run in Markdown and HTML."""

import json

from tests.conftest import run_cli
from tests.eval.conftest import TINY, tiny_llama
from tinylm.eval.leaderboard import as_entry, to_markdown
from tinylm.tokenizers import ByteTokenizer
from tinylm.train.checkpoint import save_checkpoint


def test_eval_and_leaderboard_end_to_end(tiny_ckpt, data_dir, tmp_path):
    run = tiny_ckpt.parent.parent
    save_checkpoint(run / "checkpoints" / "step_00000020", family="llama", model_config=TINY,
                    model_state=tiny_llama(seed=1).state_dict(), tokenizer=ByteTokenizer(),
                    extra_meta={"step": 20})
    common = ["--limit", "3", "--cache-dir", str(tmp_path / "cache"), "--data-dir",
              str(data_dir)]
    out = tmp_path / "report.json"
    proc = run_cli("eval", str(tiny_ckpt), *common, "-o", str(out))
    report = json.loads(out.read_text())
    flat = report["summary"]
    assert set(report["benchmarks"]) == {"wikitext2", "blimp", "arc_easy"}
    assert all(r["status"] == "ok" for r in report["benchmarks"].values())
    assert report["benchmarks"]["blimp"]["scores"]["pairs"] == 67 * 3
    assert report["benchmarks"]["arc_easy"]["scores"]["questions"] == 3
    assert report["benchmarks"]["wikitext2"]["scores"]["documents"] == 3
    expected = (flat["wikitext2_ce"] + 1 - flat["blimp_acc"] + 1 - flat["arc_easy_acc"]) / 3
    assert abs(flat["composite"] - expected) < 1e-12 and flat["arc_metric"] == "acc"
    assert report["model"]["sha256"] and report["limit"] == 3 and "composite" in proc.stdout
    assert json.loads((tiny_ckpt / "eval.json").read_text())["summary"] == flat

    proc = run_cli("eval", str(run), *common)  # a run folder: both checkpoints
    assert proc.stdout.count("ok (cached)") == 3  # step 10 again: nothing rescored

    proc = run_cli("leaderboard", str(run), *common)
    assert "step_00000010" in proc.stdout and "step_00000020" in proc.stdout
    markdown = (run / "leaderboard.md").read_text()
    page = (run / "leaderboard.html").read_text()
    assert markdown.count("| step_000000") == 2 and "composite" in markdown
    assert "data:image/png;base64," in page and "step_00000020" in page

    proc = run_cli("eval", str(tiny_ckpt), "--bench", "nope", check=False)
    assert proc.returncode == 2 and "unknown benchmark" in proc.stderr


def test_leaderboard_takes_merges_without_steps():
    entries = [as_entry("step_00000100", 100, {"composite": 1.5, "blimp_acc": 0.6}),
               as_entry("step_00000200", 200, {"composite": 1.4, "blimp_acc": 0.55}),
               as_entry("A+B@t0.5", None, {"composite": 1.3, "blimp_acc": 0.7})]
    lines = to_markdown(entries).splitlines()
    rows = [line for line in lines if line.startswith("| ") and "model" not in line]
    assert rows[0].startswith("| 1 | A+B@t0.5 | - |")  # lowest composite first
    assert entries[2].kind == "merge" and "**70.00%**" in rows[0]


def test_a_checkpoint_from_tinylm_train_is_scored_by_one_command(data_dir, tmp_path):
    """The issue's path: `tinylm train` on real TinyStories text (debug preset), then one
    `tinylm eval` gives all three benchmarks and the composite (on a --limit'ed subset)."""
    from tinylm.train.checkpoint import list_checkpoints

    run = tmp_path / "run"
    run_cli("train", "--preset", "debug", "--data", "tinystories", "--steps", "20",
            "--ckpt-every", "20", "--out", str(run), "--no-progress")
    ckpt = list_checkpoints(run / "checkpoints")[-1]
    out = tmp_path / "report.json"
    run_cli("eval", str(ckpt), "--bench", "wikitext2,blimp,arc_easy", "--limit", "2",
            "--cache-dir", str(tmp_path / "cache"), "--data-dir", str(data_dir), "-o", str(out))
    report = json.loads(out.read_text())
    assert all(r["status"] == "ok" for r in report["benchmarks"].values())
    flat = report["summary"]
    assert 0 < flat["wikitext2_ce"] < 20 and 0 <= flat["blimp_acc"] <= 1
    expected = (flat["wikitext2_ce"] + 1 - flat["blimp_acc"] + 1 - flat["arc_easy_acc"]) / 3
    assert abs(flat["composite"] - expected) < 1e-12
    assert report["model"]["sha256"]
