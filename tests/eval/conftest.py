"""Helpers for the eval tests: tiny models built in-process, a planted-preference model, and
small benchmark data dirs written to tmp_path (the real data dir is used where noted)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tinylm.models.llama import Llama, LlamaConfig
from tinylm.tokenizers import ByteTokenizer
from tinylm.train.checkpoint import save_checkpoint

TINY = dict(vocab_size=257, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=64,
            context_len=64)


def tiny_llama(seed: int = 0, **overrides) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig(**{**TINY, **overrides})).eval()


class PlantedModel(nn.Module):
    """A unigram 'language model': the same logits at every position, whatever the context.
    log p(text) is then the sum of a per-byte table, so the right answer of every benchmark
    item can be worked out by hand. No KV cache: it takes the scoring core's plain path."""

    family = "planted"

    def __init__(self, bias: torch.Tensor, context_len: int = 64):
        super().__init__()
        self.bias = nn.Parameter(bias.float().clone(), requires_grad=False)
        self.config = SimpleNamespace(context_len=context_len, vocab_size=len(bias))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*idx.shape, len(self.bias)).clone()

    def logprob(self, data: bytes) -> float:
        table = torch.log_softmax(self.bias.double(), dim=-1)
        return float(sum(table[b] for b in data))


def planted(favour: bytes = b"", strength: float = 3.0, context_len: int = 64) -> PlantedModel:
    bias = torch.zeros(257)
    for b in favour:
        bias[b] = strength
    return PlantedModel(bias, context_len)


@pytest.fixture
def tiny_ckpt(tmp_path) -> Path:
    model = tiny_llama()
    return save_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000010", family="llama",
                           model_config=TINY, model_state=model.state_dict(),
                           tokenizer=ByteTokenizer(), extra_meta={"step": 10})


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def arc_item(qid: str, question: str, choices: list[str], answer: int) -> dict:
    labels = "ABCDE"[:len(choices)]
    return {"id": qid, "question": question, "answerKey": labels[answer],
            "choices": {"text": choices, "label": list(labels)}}


@pytest.fixture
def fake_data(tmp_path) -> Path:
    """A data dir with two BLiMP paradigms, ARC-Easy test/train and a two-article WikiText."""
    root = tmp_path / "data"
    write_jsonl(root / "blimp" / "p_one.jsonl", [
        {"sentence_good": "aa a.", "sentence_bad": "bb b.", "field": "morphology",
         "linguistics_term": "t1", "UID": "p_one"},
        {"sentence_good": "a a", "sentence_bad": "a b", "field": "morphology",
         "linguistics_term": "t1", "UID": "p_one"}])
    write_jsonl(root / "blimp" / "p_two.jsonl", [
        {"sentence_good": "b", "sentence_bad": "a", "field": "syntax",
         "linguistics_term": "t2", "UID": "p_two"}])
    write_jsonl(root / "arc-easy" / "ARC-Easy-test.jsonl", [
        arc_item("t1", "Pick?", ["zzz", "qqq", "yyy"], 0),
        arc_item("t2", "Pick again?", ["qq", "zq", "qqqqqqq"], 1),
        arc_item("t3", "Which?", ["q", "zzzzzzzz"], 0)])
    write_jsonl(root / "arc-easy" / "ARC-Easy-train.jsonl", [
        arc_item(f"x{i}", f"Train question {i}?", ["right", "wrong"], 0) for i in range(6)])
    wiki = root / "wikitext-2" / "wiki.test.raw"
    wiki.parent.mkdir(parents=True)
    wiki.write_text(" \n = First = \n \n Alpha beta @-@ gamma , delta . \n \n"
                    " = Second = \n \n = = Part = = \n \n Epsilon ( zeta ) . \n \n",
                    encoding="utf-8")
    return root
