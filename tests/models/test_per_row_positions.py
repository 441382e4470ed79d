"""Per-row positions: a batch of rows at different lengths decodes in one forward pass (what
`tinylm serve` batches), with the logits and greedy ids of each row run alone."""

from __future__ import annotations

import pytest
import torch

from tinylm.models import build_model

SHAPES = {
    "llama": {"vocab_size": 50, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
              "ffn_hidden": 64, "context_len": 48, "init_std": 0.3},
    # odd head_dim: the partial-rotary path; prelude + shared loop + coda
    "looped": {"vocab_size": 50, "dim": 15, "n_heads": 5, "n_kv_heads": 5, "ffn_hidden": 24,
               "context_len": 48, "loops": 2, "n_prelude": 1, "n_coda": 1, "lora_rank": 2,
               "init_std": 0.3},
}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core box a second thread mostly spins on ops this
    small (see tests/export/test_single_file.py)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _alone(model, prompt: list[int], steps: int) -> tuple[list[torch.Tensor], list[int]]:
    """Greedy decoding of one prompt with the scalar-position cache: logits per step, ids."""
    cache = model.new_cache(1)
    logits = model(torch.tensor([prompt]), cache, 0)[0, -1]
    out_logits, ids = [logits], []
    for step in range(steps):
        ids.append(int(logits.argmax()))
        logits = model(torch.tensor([[ids[-1]]]), cache, len(prompt) + step)[0, -1]
        out_logits.append(logits)
    return out_logits, ids


@pytest.mark.parametrize("family", sorted(SHAPES))
@torch.inference_mode()
def test_mixed_length_batch_matches_each_row_alone(family):
    torch.manual_seed(0)
    model = build_model(family, SHAPES[family]).eval()
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9], [4, 4, 8, 15, 16]]
    steps = 12
    expected = [_alone(model, p, steps) for p in prompts]
    # each row prefilled alone into its row of one shared cache, then decoded together
    cache = model.new_cache(len(prompts))
    first = []
    for row, p in enumerate(prompts):
        one = model.new_cache(1)
        first.append(model(torch.tensor([p]), one, 0)[0, -1])
        cache.k[:, row, :, :len(p)] = one.k[:, 0, :, :len(p)]
        cache.v[:, row, :, :len(p)] = one.v[:, 0, :, :len(p)]
    logits = torch.stack(first)
    pos = torch.tensor([len(p) for p in prompts])
    got_ids = [[] for _ in prompts]
    for step in range(steps):
        for row in range(len(prompts)):
            torch.testing.assert_close(logits[row], expected[row][0][step], atol=1e-5, rtol=0)
        next_ids = logits.argmax(dim=-1)
        for row, token in enumerate(next_ids.tolist()):
            got_ids[row].append(token)
        logits = model(next_ids[:, None], cache, pos)[:, -1]  # ONE pass over every row
        pos = pos + 1
    assert got_ids == [ids for _, ids in expected]


def test_per_row_positions_refuse_a_chunk():
    model = build_model("llama", SHAPES["llama"])
    with pytest.raises(ValueError, match="one token per row"):
        model(torch.zeros(2, 3, dtype=torch.long), model.new_cache(2), torch.tensor([0, 1]))
