"""A merged checkpoint (no step, no tokens seen) exports, and its single file writes what
`tinylm generate` writes (issue 17, item 3: it used to fail with int(None))."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import run_cli
from tinylm.train.checkpoint import list_checkpoints, load_checkpoint

ONE_THREAD = {"OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
ARGS = ["--prompt=Once upon a time", "-n", "60", "--temperature", "0.8", "--top-k", "5",
        "--seed", "3"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["pair", "recipe"])
def test_merged_checkpoint_exports_and_generates_the_same_text(tmp_path, how):
    run = tmp_path / "run"
    run_cli("train", "--preset", "debug", "--data", "tinystories", "--steps", "4",
            "--ckpt-every", "2", "--out", str(run), "--no-progress", env=ONE_THREAD)
    a, b = list_checkpoints(run / "checkpoints")
    merged = tmp_path / "merged"
    if how == "pair":
        run_cli("merge", str(a), str(b), "--t", "0.5", "-o", str(merged), env=ONE_THREAD)
    else:  # the way a tournament builds its merges (and so a merged champion)
        run_cli("merge", "--recipe", f"gen0_{a.name}+{b.name}@t0.50", "--run", str(run), "-o",
                str(merged), env=ONE_THREAD)
    assert load_checkpoint(merged).meta["step"] is None
    script = tmp_path / "infer.py"
    run_cli("export", "single-file", str(merged), "-o", str(script), env=ONE_THREAD)
    ours = run_cli("generate", str(merged), *ARGS, env=ONE_THREAD).stdout
    proc = subprocess.run([sys.executable, str(script), *ARGS], capture_output=True,
                          timeout=300, env={**os.environ, **ONE_THREAD})
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == ours.encode("utf-8")
    again = run_cli("export", "single-file", str(merged), "-o", str(script), env=ONE_THREAD)
    assert "wrote" in again.stdout  # its own earlier export may be replaced
