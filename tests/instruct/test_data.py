"""Conversations -> packed rows with an assistant-only loss (instruct/data.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tinylm.errors import TinyLMError
from tinylm.infer.chatml import IM_END
from tinylm.instruct.data import (
    IGNORE,
    ChatRows,
    build_rows,
    encode_conversation,
    pack_rows,
    read_conversations,
)
from tinylm.tokenizers import ByteTokenizer

CHAT = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


def test_mask_covers_assistant_content_and_end_marker_only():
    ids, mask = encode_conversation(ByteTokenizer(), CHAT)
    trained = bytes(i for i, m in zip(ids, mask) if m).decode()
    assert trained == "4" + IM_END


def test_packing_keeps_whole_conversations_and_cuts_long_ones():
    tok = ByteTokenizer()
    short = encode_conversation(tok, CHAT)
    ids, mask = pack_rows([short, short, short], width=2 * len(short[0]) + 1, pad_id=tok.eos_id)
    assert ids.shape == (2, 2 * len(short[0]) + 1)           # two fit in a row, the third waits
    assert ids[1, len(short[0]):].tolist() == [tok.eos_id] * (len(short[0]) + 1)
    assert not mask[1, len(short[0]):].any()                  # padding is never trained
    long = ([1] * 30 + [2] * 10, [0] * 30 + [1] * 10)
    ids, mask = pack_rows([long], width=16, pad_id=0)
    # consecutive rows overlap by one id, so every target is predicted once; rows with no
    # trained id (the first two, all user text) are dropped
    assert len(mask) == 2
    targets = sum(int(r[1:].sum()) for r in mask)
    assert targets == 10


def test_loop_loss_is_the_mean_over_assistant_tokens(tmp_path):
    from tinylm.models import build_model
    from tinylm.train.loop import lm_loss

    tok = ByteTokenizer()
    chats = [[{"role": "user", "content": f"{i}+2?"}, {"role": "assistant", "content": "4"}]
             for i in range(40)]
    train, _, _ = build_rows(chats, tok, 31, 500, where="test")
    x, y = train.train_batch(31, 4, seed=0, step=0)
    assert x.shape == y.shape == (4, 31) and (y == IGNORE).any()
    model = build_model("llama", {"dim": 8, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
                                  "ffn_hidden": 16, "context_len": 32, "vocab_size": 257})
    logits = model(x)
    keep = y != IGNORE
    by_hand = F.cross_entropy(logits[keep], y[keep])
    torch.testing.assert_close(lm_loss(model, x, y), by_hand)


def test_batches_are_a_pure_function_of_the_step():
    rows = ChatRows(torch.arange(60).reshape(6, 10).numpy(),
                    torch.ones(6, 10, dtype=torch.bool).numpy())
    a, b = rows.train_batch(9, 4, 1, 7), rows.train_batch(9, 4, 1, 7)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], rows.train_batch(9, 4, 1, 8)[0])


def test_named_sets_read_as_described(data_dir):
    gsm, _ = read_conversations("gsm8k", data_dir)
    assert len(gsm) == 7473 and gsm[0][1]["content"].endswith("#### 72")
    seed, _ = read_conversations("self-instruct", data_dir)
    assert len(seed) >= 175 and all(c[-1]["role"] == "assistant" for c in seed)


@pytest.mark.parametrize("text, message", [
    ("{not json\n", "not a JSON line"),
    ('{"text": "x"}\n', "no 'messages'"),
    ('{"messages": [{"role": "user", "content": "hi"}]}\n', "no assistant turn"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}\n', "role must be"),
])
def test_bad_jsonl_is_refused_with_the_line(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(TinyLMError, match=message):
        read_conversations(str(path))
