"""The BLT family through tinylm's commands: exact resume with the first stage, the frozen
patcher in the checkpoint (hash in meta.json, excluded from the optimizer), merges that share
the patcher or refuse, `tinylm info`, bits per byte through the scoring core."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from safetensors.torch import load_file

from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.merge.slerp import family_layout, merge_state_dicts
from tinylm.models import get_family

STEPS = 4
TRAIN = ["train", "--preset", "blt-debug", "--data", "tinystories", "--ckpt-every", "2",
         "--eval-every", "2", "--log-every", "1", "--no-progress", "--threads", "1"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """blt-debug trained STEPS steps straight, and STEPS // 2 then resumed to STEPS."""
    root = tmp_path_factory.mktemp("blt")
    torch.set_num_threads(1)
    straight, resumed = root / "straight", root / "resumed"
    assert cli(*TRAIN, "--steps", str(STEPS), "--out", str(straight))[0] == 0
    assert cli(*TRAIN, "--steps", str(STEPS // 2), "--out", str(resumed))[0] == 0
    code, out, _ = cli("train", "--out", str(resumed), "--resume", "--steps", str(STEPS),
                       "--no-progress")
    assert code == 0 and "patcher: training" not in out  # the first stage is not rerun
    return straight, resumed


def last(run):
    return run / "checkpoints" / f"step_{STEPS:08d}"


@pytest.mark.slow
def test_resume_equals_uninterrupted_bit_for_bit(runs):
    a, b = (load_file(last(run) / "model.safetensors") for run in runs)
    assert a.keys() == b.keys() and any(k.startswith("patcher.") for k in a)
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"


@pytest.mark.slow
def test_patcher_is_frozen_stored_and_hashed(runs):
    straight = runs[0]
    first = load_file(straight / "checkpoints" / "step_00000002" / "model.safetensors")
    final = load_file(last(straight) / "model.safetensors")
    patcher = [k for k in final if k.startswith("patcher.")]
    assert all(torch.equal(first[k], final[k]) for k in patcher)  # never trained
    assert not all(torch.equal(first[k], final[k]) for k in final if k not in patcher)
    meta = json.loads((last(straight) / "meta.json").read_text())
    from tinylm.models.blt_patching import state_sha256

    assert meta["patcher"]["sha256"] == state_sha256({k: final[k] for k in patcher})
    assert meta["patcher"]["threshold"] == pytest.approx(float(final["patcher.threshold"]))
    code, out, _ = cli("info", str(last(straight)))
    assert code == 0 and meta["patcher"]["sha256"][:16] in out
    for part in ("hash n-gram embeddings", "latent transformer", "patcher (frozen"):
        assert part in out


@pytest.mark.slow
def test_merge_copies_a_shared_patcher_and_refuses_different_ones(runs):
    record = get_family("blt")
    config = record.config_from(json.loads((last(runs[0]) / "meta.json").read_text())
                                ["model_config"])
    a = load_file(runs[0] / "checkpoints" / "step_00000002" / "model.safetensors")
    b = load_file(last(runs[0]) / "model.safetensors")
    merged = merge_state_dicts(a, b, 0.5, **family_layout(record, config))
    for name in a:
        if name.startswith("patcher."):
            assert torch.equal(merged[name], a[name])
    other = dict(b, **{"patcher.tok_emb.weight": b["patcher.tok_emb.weight"] + 1e-3})
    with pytest.raises(TinyLMError, match="frozen part 'patcher.' differs"):
        merge_state_dicts(a, other, 0.5, **family_layout(record, config))


@pytest.mark.slow
def test_bits_per_byte_through_the_scoring_core(runs):
    from tinylm.eval.lm import LMScorer
    from tinylm.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(last(runs[0]))
    model = ckpt.build_model()
    text = "Once upon a time, there was a little dog."  # within the 64-byte context
    scored = LMScorer(model, ckpt.tokenizer).loglikelihood_rolling([text])[0]
    ids = torch.tensor([[ckpt.tokenizer.eos_id, *text.encode()]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[:, :-1]).float(), -1)
    expected = logp.gather(-1, ids[:, 1:, None]).sum().item()
    assert scored == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
def test_single_file_export_reproduces_the_model(runs, tmp_path):
    from tinylm.export.single_file import export_single_file

    # the export checks itself: logits bit for bit through the cache, sampled ids equal
    out = export_single_file(last(runs[0]), tmp_path / "blt_infer.py")
    assert "class BLT(nn.Module)" in out.read_text()


def test_patcher_from_a_llama_checkpoint_is_loaded_or_refused(tmp_path):
    from dataclasses import asdict

    import numpy as np

    from tinylm.models import build_model
    from tinylm.tokenizers import ByteTokenizer
    from tinylm.train.checkpoint import save_checkpoint
    from tinylm.train.config import TrainConfig

    record = get_family("blt")
    base = {**record.presets["blt-debug"].model, "vocab_size": 257}
    shape = record.config_from(base).patcher_config()

    def llama_checkpoint(name, config):
        torch.manual_seed(3)
        model = build_model("llama", config)
        return save_checkpoint(tmp_path / name, family="llama", model_config=config,
                               model_state=model.state_dict(), tokenizer=ByteTokenizer())

    good = llama_checkpoint("good", asdict(shape))
    tokens = np.random.default_rng(0).integers(0, 256, 4096).astype(np.uint16)
    blt = record.build({**base, "patcher_checkpoint": str(good)})
    record.prepare_training(blt, tokens, TrainConfig(), 64, lambda *a: None)
    saved = load_file(good / "model.safetensors")
    assert all(torch.equal(blt.patcher.state_dict()[k], v) for k, v in saved.items())
    wide = llama_checkpoint("wide", {**asdict(shape), "dim": 2 * shape.dim})
    with pytest.raises(TinyLMError, match="its shape differs from the config's patcher"):
        record.prepare_training(record.build({**base, "patcher_checkpoint": str(wide)}),
                                tokens, TrainConfig(), 64, lambda *a: None)
