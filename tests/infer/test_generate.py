"""Generation: reproducible, batched equals one by one, sampler semantics, streaming, errors."""

import pytest
import torch

import tinylm
from tests.conftest import run_cli
from tinylm.errors import TinyLMError
from tinylm.infer.generate import generate_ids
from tinylm.infer.sampling import SamplingConfig, apply_repetition_penalty, sample_next
from tinylm.models.llama import Llama, LlamaConfig

GREEDY = SamplingConfig(temperature=0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Llama(LlamaConfig(vocab_size=40, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                             ffn_hidden=48, context_len=16)).eval()


def test_seed_reproducible_and_seed_sensitive(model):
    sampling = SamplingConfig(temperature=1.0, top_k=20)
    a = generate_ids(model, [[1, 2, 3]], 30, sampling, seed=7)
    b = generate_ids(model, [[1, 2, 3]], 30, sampling, seed=7)
    c = generate_ids(model, [[1, 2, 3]], 30, sampling, seed=8)
    assert a == b and a != c and len(a[0]) == 30


def test_batched_greedy_equals_one_by_one(model):
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8], [9, 10, 11, 12, 13]]
    batched = generate_ids(model, prompts, 40, GREEDY)  # 40 > context: cache rebuilds too
    single = [generate_ids(model, [p], 40, GREEDY)[0] for p in prompts]
    assert batched == single


@torch.no_grad()
def test_greedy_follows_the_model_until_the_context_fills(model):
    prompt = [3, 1, 4, 1, 5]
    out = generate_ids(model, [prompt], 8, GREEDY)[0]
    seq = list(prompt)
    for token in out:
        assert token == int(model(torch.tensor([seq]))[0, -1].argmax())
        seq.append(token)


def test_sampler_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert sample_next(logits, SamplingConfig(temperature=1, top_k=1), None, gen) == 1
        assert sample_next(logits, SamplingConfig(temperature=1, top_p=0.01), None, gen) == 1
        assert sample_next(logits, SamplingConfig(temperature=2, top_k=2), None, gen) in (1, 2)
    seen = torch.tensor([[False, True, False, True]])
    penalised = apply_repetition_penalty(logits, seen, 2.0)
    assert penalised.tolist() == [[1.0, 1.5, 2.0, -2.0]]


def test_eos_stops_a_row(model):
    first = generate_ids(model, [[1, 2]], 5, GREEDY)[0][0]
    assert generate_ids(model, [[1, 2]], 5, GREEDY, eos_id=first) == [[]]


def test_bad_settings_are_clear(model):
    with pytest.raises(TinyLMError, match="empty prompt"):
        generate_ids(model, [[]], 5, GREEDY)
    with pytest.raises(TinyLMError, match="top_p"):
        SamplingConfig(top_p=0)
    with pytest.raises(TinyLMError, match="temperature"):
        SamplingConfig(temperature=-1)


def test_python_api_and_cli_agree(debug_run):
    ckpt = debug_run / "checkpoints" / "step_00000040"
    loaded = tinylm.load(ckpt)
    streamed = []
    text = loaded.generate("Once upon a time", 40, temperature=0.7, top_k=10, seed=3,
                           stream=streamed.append)
    assert "".join(streamed) == text and len(text) > 0
    proc = run_cli("generate", str(ckpt), "--prompt", "Once upon a time", "-n", "40",
                   "--temperature", "0.7", "--top-k", "10", "--seed", "3")
    assert proc.stdout == "Once upon a time" + text + "\n"
    batch = loaded.generate_batch(["Once", "The dog", "Once"], 10, temperature=0)
    assert batch[0] == batch[2]
