"""Faults, with nothing lost (issue 17): concurrent trainers on one folder, `kill -9` in the
middle of a merge's save and of a tournament, a stale lock, text without document marks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tinylm.train.checkpoint import list_checkpoints, load_checkpoint

ONE_THREAD = {"OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}


def _start(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tinylm", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ONE_THREAD, **(env or {})})


def _wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- /proc helpers

def _children(pid: int) -> set[int]:
    """Live descendants of pid, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# --------------------------------------------------------------------------- a short run

@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    run_cli("train", "--preset", "debug", "--data", "tinystories", "--steps", "4",
            "--ckpt-every", "2", "--eval-every", "2", "--out", str(out), "--no-progress",
            env=ONE_THREAD)
    return out


# --------------------------------------------------------------------------- the lock

@pytest.mark.slow
def test_second_trainer_on_one_folder_is_refused_and_the_first_is_intact(tmp_path):
    out = tmp_path / "cc"
    args = ("train", "--preset", "debug", "--data", "tinystories", "--steps", "600",
            "--ckpt-every", "300", "--eval-every", "300", "--out", str(out), "--no-progress")
    first = _start(*args)
    try:
        _wait_for(lambda: (out / ".lock").is_file() and (out / ".lock").read_text().strip(),
                  what="the first trainer's lock")
        second = run_cli(*args, check=False, env=ONE_THREAD)
        assert first.poll() is None, "the first trainer finished too soon to test anything"
        errors = [line for line in second.stderr.splitlines()
                  if line.startswith("tinylm: error:")]
        assert second.returncode != 0 and len(errors) == 1, second.stderr
        assert f"PID {first.pid}" in errors[0] and "Traceback" not in second.stderr
        stdout, stderr = first.communicate(timeout=300)
    finally:
        first.kill() if first.poll() is None else None
    assert first.returncode == 0, stderr
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # one run's log, not two
    ckpts = list_checkpoints(out / "checkpoints")
    assert [c.name for c in ckpts] == ["step_00000300", "step_00000600"]
    assert load_checkpoint(ckpts[-1], with_train_state=True).step == 600
    assert json.loads((out / "run.json").read_text())["train"]["steps"] == 600
    assert not (out / ".lock").exists()  # released at exit


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_line(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "stale"
    out.mkdir()
    (out / ".lock").write_text(f"{dead.pid}\n")
    proc = run_cli("train", "--preset", "debug", "--data", "tinystories", "--steps", "2",
                   "--out", str(out), "--no-progress", env=ONE_THREAD)
    assert f"taking over the stale lock of PID {dead.pid}" in proc.stdout
    assert list_checkpoints(out / "checkpoints")


# --------------------------------------------------------------------------- kill -9

@pytest.mark.slow
def test_kill_during_merge_save_loses_nothing(short_run, tmp_path):
    a, b = list_checkpoints(short_run / "checkpoints")
    out = tmp_path / "merged"
    run_cli("merge", str(a), str(b), "--t", "0.3", "-o", str(out), env=ONE_THREAD)
    before = _tree(out)
    for target in (out, tmp_path / "fresh"):  # replacing a merge, and writing a new one
        proc = _start("merge", str(a), str(b), "--t", "0.7", "-o", str(target),
                      env={"TINYLM_TEST_STALL_SAVE": "60"})
        temps = lambda: [p for p in tmp_path.iterdir()  # noqa: E731
                         if p.name.startswith(f".{target.name}.{proc.pid}.")
                         and (p / "meta.json").is_file()]
        _wait_for(temps, what="the merge's temporary folder")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _tree(out) == before  # the old merge is whole, byte for byte
        assert not (tmp_path / "fresh").exists()  # a new one is absent, not half there
    run_cli("merge", str(a), str(b), "--t", "0.7", "-o", str(out), env=ONE_THREAD)
    assert load_checkpoint(out).meta["merge"]["t"] == 0.7
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # cleaned


@pytest.mark.slow
def test_kill_of_a_tournament_leaves_no_live_child(short_run, tmp_path, data_dir):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    proc = _start("soup", str(run), "--workers", "2", "--limit", "2", "--top-k", "2",
                  "--t", "0.5", "--generations", "1", "--bench", "wikitext2,blimp,arc_easy",
                  env={"TINYLM_CACHE": str(tmp_path / "cache")})
    children = _wait_for(lambda: (lambda c: c if len(c) >= 2 else None)(_children(proc.pid)),
                         what="the tournament's worker processes")
    time.sleep(1.0)  # let the workers get into their work
    children |= _children(proc.pid)
    assert proc.poll() is None, "the tournament ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        _wait_for(lambda: not any(_alive(pid) for pid in children), timeout=20,
                  what="the workers to exit")
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- one document

@pytest.mark.slow
def test_text_without_document_marks_trains_and_says_how_it_was_split(tmp_path, data_dir):
    lines = [line for line in (data_dir / "tinystories" / "TinyStories-valid-prefix.txt")
             .read_text(encoding="utf-8").splitlines() if line.strip()][:400]
    text = tmp_path / "one_document.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = run_cli("train", "--preset", "debug", "--data", str(text), "--steps", "2",
                   "--out", str(tmp_path / "r1"), "--no-progress", env=ONE_THREAD)
    assert "no document separators" in proc.stdout and "line(s) each" in proc.stdout
    one_line = tmp_path / "one_line.txt"
    one_line.write_text(" ".join(lines), encoding="utf-8")
    proc = run_cli("train", "--preset", "debug", "--data", str(one_line), "--steps", "2",
                   "--out", str(tmp_path / "r2"), "--no-progress", env=ONE_THREAD)
    assert "chunks of" in proc.stdout
    assert list_checkpoints(tmp_path / "r2" / "checkpoints")


@pytest.mark.slow
def test_failed_start_leaves_nothing_and_can_be_started_again(tmp_path):
    """Interrupted before its first checkpoint, a start removes what it wrote; killed, it
    leaves a run.json without checkpoints, and the next start simply starts afresh."""
    out = tmp_path / "again"
    args = ("train", "--preset", "debug", "--data", "tinystories", "--steps", "2", "--out",
            str(out), "--no-progress")
    saving = lambda: list((out / "checkpoints").glob(".step_*.tmp"))  # noqa: E731
    for sig in (signal.SIGINT, signal.SIGKILL):
        proc = _start(*args, env={"TINYLM_TEST_STALL_SAVE": "60"})
        _wait_for(saving, what="the first checkpoint's save")
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        assert "Traceback" not in stderr
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and not out.exists()  # no run.json, no folder
    assert (out / "run.json").is_file() and not list_checkpoints(out / "checkpoints")
    proc = run_cli(*args, env=ONE_THREAD)
    assert "an earlier start made no checkpoint; starting it afresh" in proc.stdout
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_00000002"]
    assert not saving()  # the killed save's temporary folder is gone


PIPELINE = """
name = "faults"
[data]
name = "tinystories"
[model]
preset = "debug"
[train]
steps = 40
ckpt_every = 20
eval_every = 20
threads = 1
[eval]
limit = 2
[tournament]
top_k = 2
t_grid = [0.5]
generations = 1
workers = 2
[samples]
prompts = ["Once upon a time"]
max_new_tokens = 10
"""


@pytest.mark.slow
def test_kill_of_tinylm_run_in_its_tournament_leaves_no_child_and_restarts(tmp_path):
    recipe = tmp_path / "faults.toml"
    recipe.write_text(PIPELINE)
    out = tmp_path / "run"
    env = {"TINYLM_CACHE": str(tmp_path / "cache")}

    def in_tournament_with_workers():
        try:
            state = json.loads((out / "pipeline.json").read_text())
        except (OSError, ValueError):
            return None
        found = _children(proc.pid) if state.get("running") == "tournament" else set()
        return found or None

    proc = _start("run", str(recipe), "--out", str(out), env=env)
    children = _wait_for(in_tournament_with_workers, timeout=300,
                         what="the tournament stage's workers")
    children |= _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        _wait_for(lambda: not any(_alive(pid) for pid in children), timeout=20,
                  what="the workers to exit")
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    checkpoints = _tree(out / "checkpoints")
    run_cli("run", str(recipe), "--out", str(out), env={**ONE_THREAD, **env})
    assert _tree(out / "checkpoints") == checkpoints  # the restart trained nothing again
    assert load_checkpoint(out / "champion").meta["recipe"]


def test_full_disk_is_one_line_naming_the_path_and_what_was_kept(short_run, tmp_path,
                                                                  monkeypatch):
    import errno

    from tinylm.errors import TinyLMError
    from tinylm.io import write_text_atomic
    from tinylm.train import checkpoint

    ckpt = load_checkpoint(list_checkpoints(short_run / "checkpoints")[-1])
    folder = tmp_path / "checkpoints"
    kept = checkpoint.save_checkpoint(folder / "step_00000002", family="llama",
                                      model_config=ckpt.meta["model_config"],
                                      model_state=ckpt.model_state, tokenizer=ckpt.tokenizer)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(TinyLMError) as caught:
        checkpoint.save_checkpoint(folder / "step_00000004", family="llama",
                                   model_config=ckpt.meta["model_config"],
                                   model_state=ckpt.model_state, tokenizer=ckpt.tokenizer)
    message = str(caught.value)
    assert "\n" not in message and "step_00000004" in message and "disk is full" in message
    assert f"the last good checkpoint is {kept}" in message
    assert [p.name for p in folder.iterdir()] == ["step_00000002"]  # no temporary left
    monkeypatch.setattr("os.replace", full)
    with pytest.raises(TinyLMError, match="disk is full; the old file is unchanged"):
        write_text_atomic(tmp_path / "x.json", "{}")
    assert list(tmp_path.glob(".x.json*")) == []
