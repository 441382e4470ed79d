"""--ema-decay: the moving average is saved in every checkpoint and resumes exactly."""

import torch

from tests.conftest import run_cli
from tinylm.train.checkpoint import load_checkpoint

ARGS = ["--preset", "debug", "--data", "tinystories", "--ckpt-every", "10", "--eval-every", "0",
        "--no-progress", "--ema-decay", "0.9", "--threads", "1"]


def _ema(ckpt) -> dict:
    state = load_checkpoint(ckpt, with_train_state=True).train_state
    return {k[4:]: v for k, v in state.items() if k.startswith("ema.")}


def test_ema_is_saved_and_resumes_bit_exactly(tmp_path):
    run_cli("train", *ARGS, "--steps", "20", "--out", str(tmp_path / "straight"))
    run_cli("train", *ARGS, "--steps", "10", "--out", str(tmp_path / "split"))
    run_cli("train", "--resume", "--steps", "20", "--out", str(tmp_path / "split"),
            "--no-progress")
    straight = _ema(tmp_path / "straight" / "checkpoints" / "step_00000020")
    resumed = _ema(tmp_path / "split" / "checkpoints" / "step_00000020")
    weights = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step_00000020")
    assert set(straight) == set(weights.model_state) and straight
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # an average lags the weights: it is not the last step's weights, nor the first step's
    first = _ema(tmp_path / "straight" / "checkpoints" / "step_00000010")
    name = "layers.0.attn.wqkv.weight"
    assert not torch.equal(straight[name], weights.model_state[name])
    assert not torch.equal(straight[name], first[name])
