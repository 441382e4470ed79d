"""`tinylm sft` through the one training loop: exact resume, base as step 0, lower loss on
assistant tokens, the vocabulary grown and recorded."""

from __future__ import annotations

import json

import torch

from tinylm.instruct.data import build_rows, read_conversations
from tinylm.instruct.sft import new_sft_run
from tinylm.train.checkpoint import list_checkpoints, load_checkpoint
from tinylm.train.loop import lm_loss
from tinylm.train.session import resume_run

FLAGS = {"batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "eval_every": 0, "log_every": 1,
         "val_permille": 200, "threads": 1, "device": "cpu", "dtype": "float32"}


def _weights(run):
    return load_checkpoint(list_checkpoints(run / "checkpoints")[-1]).model_state


def test_resume_is_bit_identical_to_one_run(instruct_world):
    w, root = instruct_world, instruct_world["root"]
    whole = root / "whole"
    new_sft_run(w["bytes_base"], str(w["chats"]), None, whole,
                {**FLAGS, "steps": 6, "ckpt_every": 3}, progress=False)
    part = root / "part"
    new_sft_run(w["bytes_base"], str(w["chats"]), None, part,
                {**FLAGS, "steps": 3, "ckpt_every": 3}, progress=False)
    resume_run(part, {"steps": 6}, progress=False)
    a, b = _weights(whole), _weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    names = [p.name for p in list_checkpoints(whole / "checkpoints")]
    assert names == ["step_00000000", "step_00000003", "step_00000006"]
    base = load_checkpoint(w["bytes_base"]).model_state
    step0 = load_checkpoint(whole / "checkpoints" / "step_00000000").model_state
    assert all(torch.equal(base[k], step0[k]) for k in base)  # the base joins the run as step 0


def _assistant_loss(ckpt_path, conversations, seq_len=47) -> float:
    ckpt = load_checkpoint(ckpt_path)
    model = ckpt.build_model()
    _, val, _ = build_rows(conversations, ckpt.tokenizer, seq_len, 200)
    with torch.no_grad():
        losses = [lm_loss(model, x, y).item() for x, y in val.validation_batches(seq_len, 8, 4)]
    return sum(losses) / len(losses)


def test_sft_of_a_bpe_base_grows_the_vocab_and_lowers_assistant_loss(instruct_world):
    w = instruct_world
    run = w["root"] / "bpe_sft"
    last = new_sft_run(w["bpe_base"], str(w["chats"]), None, run,
                       {**FLAGS, "steps": 30, "ckpt_every": 30}, progress=False)
    meta = json.loads((last / "meta.json").read_text())
    ext = meta["sft"]["vocab_extension"]
    base_vocab = load_checkpoint(w["bpe_base"]).meta["model_config"]["vocab_size"]
    assert ext["from"] == base_vocab and ext["to"] == base_vocab + 2
    assert list(ext["added"].values()) == [base_vocab, base_vocab + 1]
    assert len(ext["tensors"]) == 2  # untied: the embedding and the head
    assert meta["model_config"]["vocab_size"] == base_vocab + 2
    conversations, _ = read_conversations(str(w["chats"]))
    before = _assistant_loss(run / "checkpoints" / "step_00000000", conversations)
    after = _assistant_loss(last, conversations)
    assert after < before - 0.5, (before, after)


def test_a_folder_that_is_no_checkpoint_is_refused_before_writing(instruct_world, tmp_path):
    import pytest

    from tinylm.errors import TinyLMError

    (tmp_path / "empty").mkdir()
    with pytest.raises(TinyLMError, match="not a tinylm checkpoint"):
        new_sft_run(tmp_path / "empty", str(instruct_world["chats"]), None, tmp_path / "run",
                    dict(FLAGS), progress=False)
    assert not (tmp_path / "run").exists()
