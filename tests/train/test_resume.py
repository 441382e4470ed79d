"""Exact resume: N steps + SIGKILL + resume to N + M equals N + M uninterrupted, bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from tests.conftest import run_cli

STEPS, EVERY = 60, 5
ARGS = ["train", "--preset", "debug", "--data", "tinystories", "--steps", str(STEPS),
        "--ckpt-every", str(EVERY), "--eval-every", "20", "--log-every", "1", "--no-progress",
        "--threads", "1"]


def final_weights(run):
    return load_file(run / "checkpoints" / f"step_{STEPS:08d}" / "model.safetensors")


def test_killed_run_resumes_bit_exactly(tmp_path):
    straight = tmp_path / "straight"
    run_cli(*ARGS, "--out", str(straight))

    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-m", "tinylm", *ARGS, "--out", str(killed)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = killed / "checkpoints" / f"step_{2 * EVERY:08d}"
    deadline = time.time() + 300
    while not target.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "checkpoints" / f"step_{STEPS:08d}").exists()

    run_cli(*ARGS, "--out", str(killed), "--resume")
    a, b = final_weights(straight), final_weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"

    # the metrics log reads like one run: every step logged once
    steps = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == list(range(1, STEPS + 1))


def test_resume_refuses_changed_settings(debug_run):
    proc = run_cli("train", "--out", str(debug_run), "--resume", "--lr", "0.5", check=False)
    assert proc.returncode == 2 and "cannot change ['lr']" in proc.stderr


def test_new_run_refuses_existing_folder(debug_run):
    proc = run_cli("train", "--preset", "debug", "--data", "tinystories", "--out",
                   str(debug_run), check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr
