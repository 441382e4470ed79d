"""Growing a base checkpoint's vocabulary (instruct/vocab.py)."""

from __future__ import annotations

import pytest
import torch

from tests.instruct.conftest import TINY_LLAMA
from tinylm.instruct.vocab import extend_vocab, vocab_axes
from tinylm.models import build_model


@pytest.mark.parametrize("tie", [True, False])
def test_new_rows_are_the_mean_and_old_logits_are_unchanged(tie):
    config = {**TINY_LLAMA, "tie_embeddings": tie, "vocab_size": 40}
    torch.manual_seed(0)
    model = build_model("llama", config).eval()
    state = model.state_dict()
    axes = vocab_axes("llama", config, 2)
    assert len(axes) == (1 if tie else 2) and set(axes.values()) == {0}
    new_config, grown, note = extend_vocab("llama", config, state, 2)
    assert new_config["vocab_size"] == 42 and note["to"] == 42 and note["tensors"] == sorted(axes)
    for name in axes:
        mean = state[name].mean(0, keepdim=True).expand(2, -1)
        torch.testing.assert_close(grown[name][40:], mean)
        assert torch.equal(grown[name][:40], state[name])
    bigger = build_model("llama", new_config).eval()
    bigger.load_state_dict(grown)
    ids = torch.randint(0, 40, (2, 12))
    with torch.no_grad():
        old, new = model(ids), bigger(ids)
    # the old ids' rows are untouched: their logits are the same; the new ids sit at the mean
    torch.testing.assert_close(new[..., :40], old)
    torch.testing.assert_close(new[..., 40], old.mean(-1))


def test_nothing_added_is_the_identity():
    config = {**TINY_LLAMA, "vocab_size": 40}
    state = build_model("llama", config).state_dict()
    assert extend_vocab("llama", config, state, 0) == (config, state, {})
