"""TrainConfig: torch-free, resume flags in its metadata, every value validated."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tinylm.train.config import OPTIMIZER_NAMES, TrainConfig


def test_importing_the_config_needs_no_torch():
    code = ("import sys, tinylm.train.config; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_loop_re_exports_it_and_optimizer_names_agree():
    from tinylm.train.loop import TrainConfig as FromLoop
    from tinylm.train.optim import OPTIMIZERS

    assert FromLoop is TrainConfig and tuple(OPTIMIZERS) == OPTIMIZER_NAMES


def test_resume_may_change_cadences_budget_and_placement_only():
    assert TrainConfig.resumable() == {"steps", "device", "threads", "eval_every", "ckpt_every",
                                       "log_every", "keep_last", "keep_every"}


@pytest.mark.parametrize("bad", [
    {"steps": 3.7}, {"steps": True}, {"steps": "3"}, {"lr": float("nan")},
    {"lr": float("inf")}, {"grad_accum": 0}, {"log_every": 0}, {"val_permille": 0},
    {"batch_size": 2**40}, {"eps": 0.0}, {"threads": -1}, {"device": "tpu"},
    {"compile": 1}, {"schedule": "linear"}, {"batch_size": 6, "grad_accum": 4},
])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_ints_are_accepted_for_floats_and_device_names_are_only_spelled_here():
    assert TrainConfig(min_lr_ratio=1).min_lr_ratio == 1.0
    assert isinstance(TrainConfig(min_lr_ratio=1).min_lr_ratio, float)
    assert TrainConfig(device="cuda:1").device == "cuda:1"  # present or not: pick_device's job
