"""Checkpoints are atomic, verified, and refuse what is not theirs with a clear message."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import run_cli
from tinylm.errors import TinyLMError
from tinylm.models import build_model
from tinylm.tokenizers import ByteTokenizer
from tinylm.train.checkpoint import (list_checkpoints, load_checkpoint, prune_checkpoints,
                                     save_checkpoint, step_dir_name)

CONFIG = dict(vocab_size=257, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_hidden=32,
              context_len=16)


def save_tiny(path, step=1, with_state=True):
    model = build_model("llama", CONFIG)
    state = {"optim.0.exp_avg": torch.zeros(3)} if with_state else None
    save_checkpoint(path, family="llama", model_config=CONFIG, model_state=model.state_dict(),
                    tokenizer=ByteTokenizer(), extra_meta={"step": step, "tokens_seen": 0},
                    train_state=state)
    return model


def test_round_trip(tmp_path):
    model = save_tiny(tmp_path / "c")
    ckpt = load_checkpoint(tmp_path / "c", with_train_state=True)
    again = ckpt.build_model()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name])
    assert ckpt.train_state["optim.0.exp_avg"].shape == (3,)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary folder left behind


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupt_files_are_refused(tmp_path, damage):
    save_tiny(tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[-5] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    else:
        weights.unlink()
    with pytest.raises(TinyLMError, match="sha256 mismatch|missing"):
        load_checkpoint(tmp_path / "c")


def test_foreign_files_are_refused(tmp_path):
    torch.save({"model": {}}, tmp_path / "model.pt")  # a pickle: never opened
    with pytest.raises(TinyLMError, match="folder"):
        load_checkpoint(tmp_path / "model.pt")
    (tmp_path / "hf").mkdir()
    save_file({"x": torch.zeros(2)}, tmp_path / "hf" / "model.safetensors")
    with pytest.raises(TinyLMError, match="no meta.json"):
        load_checkpoint(tmp_path / "hf")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(TinyLMError, match="not a tinylm checkpoint"):
        load_checkpoint(tmp_path / "other")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "meta.json").write_text("{trunc")
    with pytest.raises(TinyLMError, match="corrupt"):
        load_checkpoint(tmp_path / "broken")


def test_weights_only_checkpoint_cannot_resume(tmp_path):
    save_tiny(tmp_path / "c", with_state=False)
    with pytest.raises(TinyLMError, match="no optimizer state"):
        load_checkpoint(tmp_path / "c", with_train_state=True)


def test_keep_last_and_keep_every(tmp_path):
    for step in range(10, 101, 10):
        save_tiny(tmp_path / step_dir_name(step), step=step, with_state=False)
    (tmp_path / ".step_00000110.abc.tmp").mkdir()  # a killed writer's leftovers: ignored
    prune_checkpoints(tmp_path, keep_last=2, keep_every=40)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step_00000040", "step_00000080", "step_00000090", "step_00000100"]


def test_cli_reports_corruption_in_one_line(debug_run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(debug_run / "checkpoints" / "step_00000040", bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    proc = run_cli("generate", str(bad), "--prompt", "Once", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "sha256 mismatch" in proc.stderr
    assert "Traceback" not in proc.stderr
