"""`tinylm chat`: streaming cut at <|im_end|>, history, context trimming (instruct/chat.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tinylm.infer.chatml import CHAT_PRESETS, IM_END
from tinylm.infer.generate import LoadedModel
from tinylm.instruct.chat import ChatSession, TurnStream, interactive, sampling_for
from tinylm.tokenizers import ByteTokenizer


@dataclass
class _Config:
    vocab_size: int = 257
    context_len: int = 256


class ScriptedModel(torch.nn.Module):
    """Writes `script` after any prompt (the new ids it has seen pick the next one), with a
    margin so wide that the instruct preset's sampling is as good as greedy."""

    def __init__(self, script: bytes, context_len: int = 256):
        super().__init__()
        self.config = _Config(context_len=context_len)
        self.script = list(script)
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.prompt_len = None

    def forward(self, idx, cache=None, pos=0):
        if self.prompt_len is None:
            self.prompt_len = idx.shape[1]
        made = idx.shape[1] - self.prompt_len
        logits = torch.zeros(idx.shape[0], idx.shape[1], 257)
        logits[:, -1, self.script[made] if made < len(self.script) else 256] = 100.0
        return logits


def _session(script: bytes, context_len: int = 256, **kw) -> ChatSession:
    model = LoadedModel(ScriptedModel(script, context_len), ByteTokenizer(), {})
    return ChatSession(model, CHAT_PRESETS["instruct"], **kw)


def _fresh(session):
    session.model.model.prompt_len = None


def test_answer_stops_at_the_marker_and_never_prints_it():
    session = _session(b"Hello there." + IM_END.encode() + b"\nnever shown")
    shown = []
    answer, ended = session.reply("hi", shown.append, print)
    assert (answer, ended) == ("Hello there.", True)
    assert "".join(shown) == "Hello there." and all(len(s) <= len(IM_END) for s in shown[:3])
    assert session.history[-1] == {"role": "assistant", "content": "Hello there."}


def test_a_marker_prefix_that_is_not_a_marker_is_shown():
    stream = TurnStream(ByteTokenizer(), (out := []).append)
    for b in b"a <|im nope":
        stream.push(b)
    assert stream.finish() == "a <|im nope" and "".join(out) == "a <|im nope"


def test_history_is_trimmed_oldest_first_and_said():
    session = _session(b"x" * 40 + IM_END.encode(), context_len=128, max_new_tokens=16)
    notes = []
    for turn in range(4):
        _fresh(session)
        session.reply(f"question {turn}", lambda s: None, notes.append)
    assert any("dropped the oldest turn" in n for n in notes)
    assert session.history[0]["content"] != "question 0"


def test_commands_reset_settings_quit():
    session = _session(b"ok" + IM_END.encode())
    lines = iter(["hello", "/settings", "/reset", "/bogus", "/quit", "never read"])
    out, notes = [], []
    interactive(session, read=lambda prompt: next(lines), write=out.append, say=notes.append)
    assert "ok" in "".join(out)
    assert any("temperature 0.2" in n for n in notes) and session.history == []
    assert any("unknown command /bogus" in n for n in notes)


def test_presets_are_the_cards_and_flags_override():
    assert sampling_for("base", {}).top_k == 5
    assert sampling_for("instruct", {"top_k": 3}).top_k == 3
    assert sampling_for("instruct", {}).repetition_penalty == 1.5
