"""The bitnet family: exact preset size, ternary weights with the STE, 8-bit activations on and
off, cache equivalence, merge notes, and the pipeline (train, resume, eval, tournament, merge,
single-file export, generate) through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import run_cli
from tinylm.models import build_model, get_family
from tinylm.models.bitnet import BitLinear, BitNet, BitNetConfig, quantize_activations, ternary

DEBUG = {"vocab_size": 61, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
         "ffn_hidden": 48, "context_len": 32}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster, and on a busy machine far faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(act_quant: bool, seed: int = 0) -> BitNet:
    torch.manual_seed(seed)
    return BitNet(BitNetConfig(**DEBUG, act_quant=act_quant)).eval()


def test_tiny_tiny_stories_has_the_cards_998784_parameters():
    from tinylm.train.info import describe

    text = describe("tiny-tiny-stories")
    assert "998,784" in text and "family bitnet, tokenizer unigram, vocab 192" in text
    preset = get_family("bitnet").presets["tiny-tiny-stories"]
    model = build_model("bitnet", {**preset.model, "vocab_size": 192})
    assert sum(p.numel() for p in model.parameters()) == 998_784
    norms = [n for n, p in model.named_parameters() if p.ndim == 1]
    assert len(norms) == 11  # two pre-norms per block and the final norm: no SubLN
    assert sum(isinstance(m, BitLinear) for m in model.modules()) == 20


def test_ternary_weights_have_one_absmean_scale_per_matrix():
    weight = torch.cat([torch.randn(6, 4), 10 * torch.randn(3, 4)])  # two parts, very unlike
    trits, row_scale = ternary(weight, (6, 3))
    assert set(trits.unique().tolist()) <= {-1.0, 0.0, 1.0}
    torch.testing.assert_close(row_scale[:6], weight[:6].abs().mean().expand(6))
    torch.testing.assert_close(row_scale[6:], weight[6:].abs().mean().expand(3))
    layer = BitLinear(4, 9, parts=(6, 3), act_quant=False)
    layer.weight.data.copy_(weight)
    torch.testing.assert_close(layer.quantized_weight(), trits * row_scale[:, None])
    assert torch.equal(ternary(torch.zeros(3, 3), (3,))[0], torch.zeros(3, 3))  # eps: no NaN


def test_activations_are_8_bit_per_token():
    x = torch.randn(2, 5, 16) * torch.logspace(-2, 2, 5)[:, None]
    ints, step = quantize_activations(x)
    assert ints.abs().max() <= 127 and torch.equal(ints, ints.round())
    torch.testing.assert_close(step.squeeze(-1), x.abs().amax(-1) / 127)
    assert ((ints * step - x).abs() <= step / 2 + 1e-6).all()


@pytest.mark.parametrize("act_quant", [True, False])
def test_bitlinear_forward_is_quantized_and_backward_is_straight_through(act_quant):
    torch.manual_seed(0)
    layer = BitLinear(16, 12, parts=(8, 4), act_quant=act_quant)
    x = torch.randn(3, 16, requires_grad=True)
    out = layer(x)
    ints, step = quantize_activations(x.detach())
    xq = ints * step if act_quant else x.detach()
    weight_q = layer.quantized_weight().detach().requires_grad_()
    reference = F.linear(xq, weight_q)
    torch.testing.assert_close(out, reference)
    grad = torch.randn_like(out)
    out.backward(grad)
    reference.backward(grad)
    # the STE: the latent weight gets the gradient of the quantized one, x that of x_q
    torch.testing.assert_close(layer.weight.grad, weight_q.grad)
    torch.testing.assert_close(x.grad, grad @ layer.quantized_weight().detach())


@pytest.mark.parametrize("act_quant", [True, False])
def test_cached_decoding_equals_the_full_forward(act_quant):
    model = _model(act_quant)
    idx = torch.randint(0, DEBUG["vocab_size"], (2, 20))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2)
        steps = [model(idx[:, :8], cache, 0)] + [model(idx[:, t:t + 1], cache, t)
                                                  for t in range(8, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert model.fast_decoder() is None  # llama's would skip the quantization


def test_activation_quantization_changes_the_function():
    on, off = _model(True), _model(False)
    off.load_state_dict(on.state_dict())
    idx = torch.randint(0, DEBUG["vocab_size"], (1, 12))
    with torch.no_grad():
        assert not torch.allclose(on(idx), off(idx))


def test_merge_notes_count_ternary_flips():
    record = get_family("bitnet")
    config = BitNetConfig(**DEBUG)
    a, b = _model(True, 0).state_dict(), _model(True, 1).state_dict()
    same = record.merge_notes(a, b, a, config)
    assert same["flipped_vs_a"] == 0 and 0.3 < same["flipped_vs_b"] == same["a_b_disagree"]
    assert same["ternary_values"] == sum(a[n].numel() for n in a if n.endswith(
        ("wqkv.weight", "wo.weight", "w13.weight", "w2.weight")))
    halfway = {n: (a[n] + b[n]) / 2 for n in a}
    notes = record.merge_notes(a, b, halfway, config)
    assert 0 < notes["flipped_vs_a"] < notes["a_b_disagree"]


def test_single_file_export_reproduces_bitnet(tmp_path):
    from tinylm.export.single_file import export_single_file
    from tinylm.tokenizers import ByteTokenizer
    from tinylm.train.checkpoint import save_checkpoint

    config = {**DEBUG, "vocab_size": 257, "act_quant": True}
    model = BitNet(BitNetConfig(**config))
    save_checkpoint(tmp_path / "ckpt", family="bitnet", model_config=config,
                    model_state=model.state_dict(), tokenizer=ByteTokenizer())
    export_single_file(tmp_path / "ckpt", tmp_path / "infer.py")  # checks itself, bit for bit


# --------------------------------------------------------------------------- through the CLI

TRAIN = ["train", "--preset", "bitnet-debug", "--data", "tinystories", "--steps", "20",
         "--ckpt-every", "5", "--eval-every", "20", "--log-every", "1", "--no-progress",
         "--threads", "1"]


@pytest.mark.slow
def test_killed_bitnet_run_resumes_bit_exactly(tmp_path):
    from safetensors.torch import load_file

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_cli(*TRAIN, "--out", str(straight))
    child = subprocess.Popen([sys.executable, "-m", "tinylm", *TRAIN, "--out", str(killed)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = killed / "checkpoints" / "step_00000005"
    deadline = time.time() + 300
    while not target.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    run_cli(*TRAIN, "--out", str(killed), "--resume")
    last = "checkpoints/step_00000020/model.safetensors"
    a, b = load_file(straight / last), load_file(killed / last)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.slow
def test_bitnet_goes_through_the_pipeline(tmp_path):
    from tinylm.train.checkpoint import list_checkpoints, read_meta

    run = tmp_path / "run"
    run_cli("train", "--preset", "bitnet-debug", "--data", "tinystories", "--steps", "20",
            "--ckpt-every", "10", "--eval-every", "20", "--no-progress", "--out", str(run))
    steps = list_checkpoints(run / "checkpoints")
    assert "composite" in run_cli("eval", str(steps[-1]), "--limit", "2").stdout

    out = run_cli("tournament", str(run), "--top-k", "2", "--generations", "1", "--t", "0.5",
                  "--limit", "2", "--workers", "1").stdout
    assert "merge notes for" in out and "flipped_vs_a" in out
    merges = list((run / "tournament" / "merges").iterdir())
    assert "flipped_vs_a" in read_meta(merges[0])["merge_notes"]

    merged = tmp_path / "merged"
    out = run_cli("merge", str(steps[0]), str(steps[-1]), "--t", "0.5", "-o", str(merged)).stdout
    notes = json.loads((merged / "meta.json").read_text())["merge_notes"]
    assert f"flipped_vs_a {notes['flipped_vs_a']}" in out and 0 < notes["flipped_vs_a"] < 1

    script = tmp_path / "infer.py"
    run_cli("export", "single-file", str(run / "champion"), "-o", str(script))
    flags = ["--prompt", "Once upon", "-n", "30", "--temperature", "0.8", "--seed", "3"]
    ours = run_cli("generate", str(run / "champion"), *flags).stdout
    theirs = subprocess.run([sys.executable, str(script), *flags], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert theirs.returncode == 0 and theirs.stdout == ours and len(ours) > len("Once upon\n")

    packed = run_cli("export", "bitnet", str(run / "champion"), "-o", str(tmp_path / "m.tlm"))
    assert "wrote" in packed.stdout and (tmp_path / "m.tlm").is_file()
