"""ChatML, the conversation format of the Blink-1 instruct card: each turn is

    <|im_start|>{role}\\n{content}<|im_end|>\\n

and a prompt for the model's answer ends with `<|im_start|>assistant\\n`; the model ends its turn
by writing `<|im_end|>`. This module is the one place that spells the format: `tinylm sft`
(training text and the assistant-token mask), `tinylm chat` and `tinylm serve` all render
through `render`. It works on text; whether a marker is one id (a special token of a BPE or
unigram vocabulary) or eleven plain bytes (Blink has no tokenizer) is the tokenizer's business.
Torch-free, so the command line can import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinylm.errors import TinyLMError
from tinylm.infer.settings import SamplingConfig

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
MARKERS = (IM_START, IM_END)
ROLES = ("system", "user", "assistant")

# The Blink-1 card's recommended decoding, per model kind (`tinylm chat --preset`).
CHAT_PRESETS: dict[str, SamplingConfig] = {
    "base": SamplingConfig(temperature=0.5, top_k=5, repetition_penalty=1.1),
    "instruct": SamplingConfig(temperature=0.2, top_k=10, repetition_penalty=1.5),
}


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text and whether the model is trained to write it (assistant turns)."""
    text: str
    trained: bool


def check_messages(messages, where: str = "messages") -> list[dict]:
    """Refuse anything that is not a list of {"role", "content"} turns, with one clear line."""
    if not isinstance(messages, list) or not messages:
        raise TinyLMError(f"{where}: expected a non-empty list of messages")
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict):
            raise TinyLMError(f"{where}[{i}]: expected an object with role and content")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise TinyLMError(f"{where}[{i}]: role must be one of {', '.join(ROLES)}, "
                              f"got {role!r}")
        if not isinstance(content, str):
            raise TinyLMError(f"{where}[{i}]: content must be a string")
        for marker in MARKERS:
            if marker in content:
                # A marker inside content would let one turn forge another (prompt injection
                # into the format itself); refuse rather than escape, as the card has no escape.
                raise TinyLMError(f"{where}[{i}]: content contains the marker {marker}")
    return messages


def segments(messages, add_generation_prompt: bool = False) -> list[Segment]:
    """The conversation as segments; an assistant turn's content and closing marker are trained
    (the model must learn to end its turn), its header is not."""
    out: list[Segment] = []
    for turn in check_messages(messages):
        header = f"{IM_START}{turn['role']}\n"
        if turn["role"] == "assistant":
            out.append(Segment(header, False))
            out.append(Segment(f"{turn['content']}{IM_END}", True))
            out.append(Segment("\n", False))
        else:
            out.append(Segment(f"{header}{turn['content']}{IM_END}\n", False))
    if add_generation_prompt:
        out.append(Segment(f"{IM_START}assistant\n", False))
    return out


def render(messages, add_generation_prompt: bool = True) -> str:
    """The conversation as ChatML text, by default ending where the assistant's answer begins."""
    return "".join(s.text for s in segments(messages, add_generation_prompt))


def cut_at_end_of_turn(text: str) -> tuple[str, bool]:
    """The answer up to (not including) `<|im_end|>`, and whether the marker was there."""
    at = text.find(IM_END)
    return (text, False) if at < 0 else (text[:at], True)
