"""Tiny base checkpoints and conversation files for the instruct tests, built in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tinylm.models import build_model
from tinylm.tokenizers import ByteTokenizer, train_tokenizer
from tinylm.train.checkpoint import save_checkpoint

TINY_LLAMA = {"dim": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "ffn_hidden": 32,
              "context_len": 48, "tie_embeddings": True}


def conversations(n: int = 60) -> list[dict]:
    """Short arithmetic chats: the answer is learnable, so SFT has something to lower."""
    return [{"messages": [{"role": "user", "content": f"{i} plus 1?"},
                          {"role": "assistant", "content": f"{i + 1}"}]} for i in range(n)]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def save_base(path: Path, tokenizer, tie: bool = True) -> Path:
    torch.manual_seed(0)
    config = {**TINY_LLAMA, "tie_embeddings": tie, "vocab_size": tokenizer.vocab_size}
    model = build_model("llama", config)
    return save_checkpoint(path, family="llama", model_config=config,
                           model_state=model.state_dict(), tokenizer=tokenizer,
                           extra_meta={"step": 10, "tokens_seen": 0})


@pytest.fixture(scope="session")
def bpe_tokenizer():
    texts = [f"{i} plus 1? The answer is {i + 1}. hello world" for i in range(200)]
    return train_tokenizer("bpe", texts, 300)


@pytest.fixture(scope="session")
def instruct_world(tmp_path_factory, bpe_tokenizer):
    root = tmp_path_factory.mktemp("instruct")
    return {"root": root,
            "bytes_base": save_base(root / "bytes_base", ByteTokenizer()),
            "bpe_base": save_base(root / "bpe_base", bpe_tokenizer, tie=False),
            "chats": write_jsonl(root / "chats.jsonl", conversations())}
