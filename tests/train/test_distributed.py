"""Two processes under torchrun (gloo, CPU) follow the same loss curve as one process with the
same global batch, to float tolerance."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import run_cli

ARGS = ["train", "--preset", "debug", "--data", "tinystories", "--steps", "12",
        "--batch-size", "8", "--ckpt-every", "12", "--eval-every", "6", "--log-every", "1",
        "--no-progress", "--threads", "1"]


def losses(run):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r], [r["val_loss"] for r in rows
                                                       if "val_loss" in r]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    single = tmp_path / "single"
    run_cli(*ARGS, "--out", str(single))
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "tinylm", *ARGS, "--out", str(ddp)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train_a, val_a = losses(single)
    train_b, val_b = losses(ddp)
    assert len(train_a) == len(train_b) == 12
    for a, b in zip(train_a + val_a, train_b + val_b):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    assert train_b[-1] < train_b[0]
