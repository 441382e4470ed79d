"""benchmarks/bench_train_generate.py: the peer really is the same model as tinylm's."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train_generate.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_generate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pair(bench):
    ours, peer = bench.build_models(seed=3)
    return ours.eval(), peer.eval()


def test_same_parameters_same_logits(bench, pair):
    ours, peer = pair
    assert sum(p.numel() for p in ours.parameters()) == 917_120
    assert sum(p.numel() for p in peer.parameters()) == 917_120
    assert bench.check_same_function(ours, peer, 256) < 1e-4  # the full context


def test_same_loss_and_same_greedy_continuations(bench, pair):
    from tinylm.train.loop import lm_loss

    ours, peer = pair
    x, y = torch.randint(0, 500, (2, 64)), torch.randint(0, 500, (2, 64))
    with torch.no_grad():
        peer_loss = F.cross_entropy(peer(input_ids=x).logits.reshape(-1, 500), y.reshape(-1))
        assert abs(float(lm_loss(ours, x, y)) - float(peer_loss)) < 1e-5
    prompts = torch.randint(0, 500, (3, 16))
    assert bench.generate_ours(ours, prompts, 12) == bench.generate_peer(peer, prompts, 12)


def test_flop_formulas(bench):
    from tinylm.models.llama import LlamaConfig

    config = LlamaConfig(vocab_size=500)
    assert bench.flops_per_token_train(config, 256, 917_120) == 6 * 917_120 + 12 * 4 * 128 * 256
    assert bench.flops_per_token_generate(config, 16, 128, 917_120) == \
        2 * 917_120 + 4 * 4 * 128 * 80
