"""`tinylm chat CKPT`: a terminal chat in ChatML, streamed, with history.

Each turn renders the whole conversation (`chatml.render`, ending `<|im_start|>assistant\\n`),
decodes through the one decode loop (`infer.generate.generate_ids`) and stops at the model's
`<|im_end|>`: an id of its own for `bpe`/`unigram` SFT checkpoints, nine bytes for `bytes`
models, so the end is found in the decoded text either way, and the marker is never printed
(`TurnStream` holds back text that could be the start of a marker). History that no longer
fits the context (prompt + the answer budget) loses its oldest turns first, a user turn with
its answer, and the chat says so. Commands: /reset, /settings, /quit.

Decoding presets are the Blink-1 card's (`chatml.CHAT_PRESETS`); any sampling flag overrides
its preset's value.
"""

from __future__ import annotations

import codecs
import dataclasses
import sys
from dataclasses import dataclass, field

from tinylm.errors import TinyLMError
from tinylm.infer import chatml

COMMANDS = {"/reset": "forget the conversation", "/settings": "show the decoding settings",
            "/quit": "leave (also Ctrl-D)"}


class TurnStream:
    """Decoded text of one answer, written as it comes, cut before `<|im_end|>`.

    `push(id)` returns True once the marker is complete (the caller stops that row). Text that
    might be the marker's beginning is held back until it is clearly not."""

    def __init__(self, tokenizer, write):
        self.tokenizer, self.write = tokenizer, write
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text, self.shown, self.ended = "", 0, False

    def push(self, token: int) -> bool:
        self.text += self.decoder.decode(self.tokenizer.decode_bytes([token]))
        answer, self.ended = chatml.cut_at_end_of_turn(self.text)
        if self.ended:
            self._show(len(answer))
            return True
        self._show(len(self.text) - _marker_prefix(self.text))
        return False

    def finish(self) -> str:
        if not self.ended:
            self.text += self.decoder.decode(b"", final=True)
            self._show(len(self.text))
        return self.answer

    @property
    def answer(self) -> str:
        return chatml.cut_at_end_of_turn(self.text)[0]

    def _show(self, upto: int) -> None:
        if upto > self.shown:
            self.write(self.text[self.shown:upto])
            self.shown = upto


def _marker_prefix(text: str) -> int:
    """Length of the longest tail of `text` that begins `<|im_end|>`."""
    for size in range(min(len(chatml.IM_END) - 1, len(text)), 0, -1):
        if chatml.IM_END.startswith(text[-size:]):
            return size
    return 0


@dataclass
class ChatSession:
    """A model, its decoding settings and the conversation so far."""
    model: object                  # tinylm.infer.generate.LoadedModel
    sampling: object               # SamplingConfig
    max_new_tokens: int = 256
    seed: int = 0
    system: str | None = None
    history: list[dict] = field(default_factory=list)
    turns: int = 0

    def reset(self) -> None:
        self.history.clear()

    def prompt_ids(self, user: str, say) -> list[int]:
        """The ChatML prompt of history + this user turn, oldest turns dropped to fit."""
        context = int(self.model.model.config.context_len)
        room = max(1, context - min(self.max_new_tokens, context // 2))
        while True:
            messages = ([{"role": "system", "content": self.system}] if self.system else []) \
                + self.history + [{"role": "user", "content": user}]
            ids = self.model.tokenizer.encode(chatml.render(messages))
            if len(ids) <= room or not self.history:
                if len(ids) > room:
                    say(f"(the message alone is {len(ids)} tokens, over the {room} the context "
                        f"leaves for it: the model sees its last part only)")
                return ids
            del self.history[:2]  # the oldest user turn and its answer
            say("(history: dropped the oldest turn to fit the context)")

    def reply(self, user: str, write, say) -> tuple[str, bool]:
        """Answer `user`, streaming through `write`; (answer, ended with <|im_end|>)."""
        from tinylm.infer.generate import generate_ids

        chatml.check_messages([{"role": "user", "content": user}], "message")
        ids = self.prompt_ids(user, say)
        stream = TurnStream(self.model.tokenizer, write)
        generate_ids(self.model.model, [ids], self.max_new_tokens, self.sampling,
                     self.seed + self.turns, self.model.tokenizer.eos_id,
                     lambda row, token: stream.push(token))
        answer = stream.finish()
        self.turns += 1
        self.history += [{"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]
        return answer, stream.ended

    def describe(self) -> str:
        s = dataclasses.asdict(self.sampling)
        return (f"temperature {s['temperature']}, top_k {s['top_k']}, top_p {s['top_p']}, "
                f"repetition_penalty {s['repetition_penalty']}, max_new_tokens "
                f"{self.max_new_tokens}, seed {self.seed}")


def sampling_for(preset: str, flags: dict):
    """The preset's SamplingConfig with the given flags (field -> value) on top."""
    if preset not in chatml.CHAT_PRESETS:
        raise TinyLMError(f"unknown --preset {preset!r}; choose {', '.join(chatml.CHAT_PRESETS)}")
    return dataclasses.replace(chatml.CHAT_PRESETS[preset], **flags)


def interactive(session: ChatSession, read=input, write=None, say=None) -> None:
    """The read-answer loop of a terminal."""
    write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    say = say or (lambda s: print(s, file=sys.stderr, flush=True))
    say(f"chat with {session.model.path} ({session.describe()}); "
        + ", ".join(f"{c}: {h}" for c, h in COMMANDS.items()))
    while True:
        try:
            line = read("you> ")
        except EOFError:
            write("\n")
            return
        command = line.strip()
        if not command:
            continue
        if command == "/quit":
            return
        if command == "/reset":
            session.reset()
            say("(conversation forgotten)")
            continue
        if command == "/settings":
            say(session.describe())
            continue
        if command.startswith("/") and command.split()[0] not in COMMANDS:
            say(f"unknown command {command.split()[0]}; commands: {', '.join(COMMANDS)}")
            continue
        write("assistant> ")
        try:
            _, ended = session.reply(line, write, say)
        except TinyLMError as err:
            say(f"(not sent: {err})")
            continue
        write("\n")
        if not ended:
            say(f"(no <|im_end|> within {session.max_new_tokens} tokens)")
