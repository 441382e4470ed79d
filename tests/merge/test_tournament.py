"""The checkpoint tournament end to end: real checkpoints from a TinyStories run, a
1-generation tournament with K=3 on benchmark subsets, recipes, lineage, cache, kill + resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import run_cli
from tinylm.merge.recipe import parse_recipe
from tinylm.train.checkpoint import load_checkpoint

SOUP = ["--top-k", "3", "--generations", "1", "--limit", "6", "--workers", "2",
        "--per-metric-seeds", "false", "--baselines", "false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("soup") / "run"
    run_cli("train", "--preset", "debug", "--data", "tinystories", "--steps", "200",
            "--ckpt-every", "50", "--eval-every", "100", "--out", str(out), "--no-progress")
    return out


def state(run):
    return json.loads((run / "tournament" / "state.json").read_text())


@pytest.mark.slow
def test_tournament_recipes_lineage_cache_and_resume(trained, tmp_path):
    cache = {"TINYLM_CACHE": str(tmp_path / "cache")}
    straight = tmp_path / "straight"
    shutil.copytree(trained, straight)
    proc = run_cli("soup", str(straight), *SOUP, env=cache)
    entries = {e["name"]: e for e in state(straight)["entries"]}
    ckpts = [n for n, e in entries.items() if e["generation"] < 0]
    merges = [n for n, e in entries.items() if e["generation"] == 0]
    assert sorted(ckpts) == [f"step_{s:08d}" for s in (50, 100, 150, 200)]
    assert len(merges) == 9  # 3 pairs of the top 3 x 3 values of t
    top3 = sorted(ckpts, key=lambda n: entries[n]["metrics"]["composite"])[:3]
    for name in merges:
        tree = parse_recipe(name)
        assert tree.generation == 0 and tree.t in (0.25, 0.5, 0.75)
        assert {tree.left.name, tree.right.name} <= set(top3)
        # the better-scoring parent is the left (t = 0) end
        assert (entries[tree.left.name]["metrics"]["composite"]
                <= entries[tree.right.name]["metrics"]["composite"])

    champion = load_checkpoint(straight / "champion")
    best = min(entries.values(), key=lambda e: e["metrics"]["composite"])
    assert champion.meta["recipe"] == best["name"]
    assert champion.meta["scores"]["composite"] == best["metrics"]["composite"]
    assert champion.meta["best_checkpoint"]["name"] == min(
        ckpts, key=lambda n: entries[n]["metrics"]["composite"])
    assert set(champion.meta["lineage"]["leaves"]) <= set(ckpts)
    assert "Best merge vs best checkpoint" in (straight / "tournament" / "report.md").read_text()
    assert (straight / "tournament" / "report.html").read_text().count("data:image/png") == 1

    # every merge can be rebuilt from its recipe alone, byte for byte
    merge = merges[0]
    run_cli("merge", "--recipe", merge, "--run", str(straight), "-o", str(tmp_path / "again"))
    rebuilt = load_file(tmp_path / "again" / "model.safetensors")
    original = load_file(entries[merge]["path"] + "/model.safetensors")
    assert all(torch.equal(rebuilt[k], original[k]) for k in original)

    # a second run scores nothing again
    files = sorted((tmp_path / "cache" / "eval").rglob("*.json"))
    stamps = [f.stat().st_mtime_ns for f in files]
    proc = run_cli("soup", str(straight), *SOUP, env=cache)
    assert "scored" not in proc.stdout.replace("already scored", "")
    assert [f.stat().st_mtime_ns for f in files] == stamps

    # a killed tournament resumes and ends where an uninterrupted one ends
    killed = tmp_path / "killed"
    shutil.copytree(trained, killed)
    child = subprocess.Popen([sys.executable, "-m", "tinylm", "soup", str(killed), *SOUP],
                             env={**os.environ, "TINYLM_CACHE": str(tmp_path / "cache2")},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = killed / "tournament" / "state.json"
    deadline = time.time() + 300
    while child.poll() is None and time.time() < deadline:
        if state_file.is_file() and len(json.loads(state_file.read_text())["entries"]) >= 6:
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the tournament ended before the kill"
    assert len(state(killed)["entries"]) < 13
    run_cli("soup", str(killed), *SOUP, env={"TINYLM_CACHE": str(tmp_path / "cache2")})
    a = {e["name"]: e["metrics"] for e in state(straight)["entries"]}
    b = {e["name"]: e["metrics"] for e in state(killed)["entries"]}
    assert a == b
    assert load_checkpoint(killed / "champion").meta["recipe"] == champion.meta["recipe"]
