"""`tinylm run`: the whole loop, killed in every stage and restarted, ends exactly where an
uninterrupted run ends; a finished run redoes nothing."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli
from tinylm.pipeline.recipe import builtin_recipes, load_recipe
from tinylm.pipeline.runner import STAGES
from tinylm.train.checkpoint import load_checkpoint

RECIPE = """
name = "tiny"
description = "test recipe"
[data]
name = "tinystories"
[model]
preset = "debug"
[train]
steps = 120
ckpt_every = 30
eval_every = 60
threads = 1
[eval]
limit = 5
[tournament]
top_k = 3
generations = 1
workers = 1
[samples]
prompts = ["Once upon a time"]
max_new_tokens = 20
"""

# `python -c STALL_DRIVER STAGE ARGS...`: the `tinylm ARGS` command, stalled (so it can be
# killed there) once the pipeline starts STAGE, through the runner's STAGE_HOOKS.
STALL_DRIVER = """
import sys, time
from tinylm.cli import main
from tinylm.pipeline import runner
stall_at = sys.argv[1]
runner.STAGE_HOOKS.append(lambda stage: stage == stall_at and time.sleep(3600))
raise SystemExit(main(sys.argv[2:]))
"""


def outcome(run):
    champion = load_checkpoint(run / "champion")
    tournament = json.loads((run / "tournament" / "state.json").read_text())
    weights = hashlib.sha256((run / "champion" / "model.safetensors").read_bytes()).hexdigest()
    return (weights, champion.meta["recipe"], champion.meta["scores"],
            {e["name"]: e["metrics"] for e in tournament["entries"]},
            json.loads((run / "samples.json").read_text()))


def wait_for(predicate, child, limit=300):
    deadline = time.time() + limit
    while child.poll() is None and time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def running_stage(run):
    try:
        return json.loads((run / "pipeline.json").read_text()).get("running")
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_killed_in_every_stage_ends_like_an_uninterrupted_run(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    env = {"TINYLM_CACHE": str(tmp_path / "cache-a")}
    straight = tmp_path / "straight"
    run_cli("run", str(recipe), "--out", str(straight), env=env)
    for name in ("champion/meta.json", "MODEL_CARD.md", "report.html", "tournament/report.md"):
        assert (straight / name).is_file(), name

    killed = tmp_path / "killed"
    env_b = {**os.environ, "TINYLM_CACHE": str(tmp_path / "cache-b")}
    for stage in STAGES:
        command = ["run", str(recipe), "--out", str(killed)]
        launch = (["-m", "tinylm"] if stage in ("train", "tournament") else
                  ["-c", STALL_DRIVER, stage])
        child = subprocess.Popen([sys.executable, *launch, *command], env=env_b,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if stage == "train":  # mid-training, after the second checkpoint
            hit = wait_for(lambda: (killed / "checkpoints" / "step_00000060").exists(), child)
        elif stage == "tournament":  # mid-tournament, after a few merges
            state = killed / "tournament" / "state.json"
            hit = wait_for(lambda: state.is_file() and len(json.loads(state.read_text())
                                                           ["entries"]) >= 6, child)
        else:
            hit = wait_for(lambda: running_stage(killed) == stage, child)
        assert hit, f"never reached stage {stage}"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL, f"finished before the kill in {stage}"
    run_cli("run", str(recipe), "--out", str(killed), env={"TINYLM_CACHE": env_b["TINYLM_CACHE"]})
    assert outcome(killed) == outcome(straight)

    started = time.perf_counter()
    proc = run_cli("run", str(recipe), "--out", str(killed), env={"TINYLM_CACHE": env_b[
        "TINYLM_CACHE"]})
    assert all(f"[{s}] done already" in proc.stdout for s in STAGES)
    assert time.perf_counter() - started < 30


def test_every_builtin_recipe_is_valid():
    from tinylm.config import preset_names

    for name in builtin_recipes():
        recipe = load_recipe(name)
        assert recipe.model.preset in preset_names(), name


def test_recipe_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[train]\nstepz = 3\n')
    proc = run_cli("run", str(bad), check=False)
    assert proc.returncode == 2 and "unknown setting" in proc.stderr
    proc = run_cli("run", "no-such-recipe", check=False)
    assert proc.returncode == 2 and "unknown recipe" in proc.stderr
