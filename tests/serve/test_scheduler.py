"""The batching scheduler in-process: mixed-length requests decoded together give each
request's text alone; chat answers stop at <|im_end|> without returning it; a stream's held-back
text never leaks a partial stop; a client gone mid-stream frees its row."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import SimpleNamespace

import openai
import pytest
import torch
from torch import nn

import tinylm
from tests.serve.conftest import save_tiny_checkpoint
from tinylm.infer import chatml
from tinylm.infer.sampling import SamplingConfig
from tinylm.models.common import KVCache
from tinylm.serve.app import ServedModel, create_app
from tinylm.serve.scheduler import (Choice, Delta, Finished, Job, QueueFull, Scheduler,
                                    held_back)
from tinylm.serve.server import bind
from tinylm.tokenizers import ByteTokenizer


def test_a_port_in_use_is_one_line():
    import socket

    from tinylm.errors import TinyLMError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(TinyLMError, match=f"cannot listen on 127.0.0.1:{port}: already in use"):
            bind("127.0.0.1", port)


def test_held_back_is_the_longest_suffix_that_starts_a_stop():
    assert held_back("hello <|im", ("<|im_end|>",)) == 4
    assert held_back("hello", ("<|im_end|>",)) == 0
    assert held_back("ab", ("b", "abc")) == 2  # "ab" may still become "abc"
    assert held_back("x", ()) == 0


def test_the_queue_holds_max_queue_requests_beyond_the_free_slots():
    """2 free slots + a queue of 1: the fourth waiting request is refused at once."""
    model = ScriptedModel(b"x", 1)
    scheduler = Scheduler(model, ByteTokenizer(), max_batch=2, max_queue=1)  # not started

    async def submit_four() -> int:
        loop = asyncio.get_running_loop()
        accepted = 0
        for _ in range(4):
            try:
                scheduler.submit(Job([Choice(0, [1], 1, SamplingConfig(), 0)], loop))
                accepted += 1
            except QueueFull:
                break
        return accepted

    assert asyncio.run(submit_four()) == 3


# --------------------------------------------------------------------------- real model

def _blink_checkpoint(path):
    """Blink-1's shape (looped, block-sparse attention) with random weights."""
    from tinylm.config import load_preset
    from tinylm.models import build_model
    from tinylm.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = {**load_preset("blink-1")["model"], "vocab_size": 257}
    model = build_model("looped", config)
    with torch.no_grad():  # LoRA and loop embeddings start at zero; make every path count
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
    return save_checkpoint(path, family="looped", model_config=config,
                           model_state=model.state_dict(), tokenizer=ByteTokenizer(),
                           extra_meta={"step": 0})


def _blt_checkpoint(path):
    """A BLT (blt-debug, random weights): its cache is not a KVCache, so rows own caches."""
    from tinylm.config import load_preset
    from tinylm.models import build_model
    from tinylm.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = {**load_preset("blt-debug")["model"], "vocab_size": 257}
    model = build_model("blt", config)
    return save_checkpoint(path, family="blt", model_config=config,
                           model_state=model.state_dict(), tokenizer=ByteTokenizer(),
                           extra_meta={"step": 0})


@pytest.mark.parametrize("make", [save_tiny_checkpoint, _blink_checkpoint, _blt_checkpoint],
                         ids=["llama-per-row-positions", "blink-block-sparse-grouped",
                              "blt-own-caches"])
def test_mixed_length_requests_batched_equal_each_alone(tmp_path, make):
    """Six seeded requests with prompts of different lengths, decoded in shared steps, write
    what `tinylm generate` writes for each alone."""
    loaded = tinylm.load(make(tmp_path / "ckpt"))
    # "Hi" and "Yo" have one length, so even a model stepped by position shares passes
    prompts = ["Once upon a time", "A", "The little dog ran", "Hi", "Tom and Sue", "Yo"]
    sampling = SamplingConfig(temperature=0.8, top_k=20)
    scheduler = Scheduler(loaded.model, loaded.tokenizer, max_batch=8, max_queue=8)

    async def run() -> list[str]:
        loop = asyncio.get_running_loop()
        jobs = [Job([Choice(0, loaded.tokenizer.encode(p), 20, sampling, seed)], loop)
                for seed, p in enumerate(prompts)]
        for job in jobs:
            scheduler.submit(job)
        return [await _text_of(job) for job in jobs]

    scheduler.start()
    try:
        texts = asyncio.run(run())
    finally:
        scheduler.close()
    for seed, (prompt, text) in enumerate(zip(prompts, texts)):
        assert text == loaded.generate(prompt, 20, temperature=0.8, top_k=20, seed=seed)
    if scheduler.shared_cache:
        assert scheduler.rows_stepped > scheduler.steps  # steps carried several requests
    else:
        assert scheduler.rows_stepped == scheduler.steps  # one row per pass, each exact


async def _text_of(job: Job) -> str:
    parts = []
    while True:
        event = await job.events.get()
        if isinstance(event, Finished):
            return "".join(parts)
        assert isinstance(event, Delta), event
        parts.append(event.text)


# --------------------------------------------------------------------------- scripted model

class ScriptedModel(nn.Module):
    """Writes `script` (bytes) right after a prompt of `prompt_len` tokens, then eos, whatever
    it is fed: a model whose answer the test knows. `delay` seconds per forward pass."""

    def __init__(self, script: bytes, prompt_len: int, delay: float = 0.0, context: int = 256):
        super().__init__()
        self.config = SimpleNamespace(context_len=context, vocab_size=257)
        self.anchor = nn.Parameter(torch.zeros(1))  # a device for the scheduler to read
        self.script, self.prompt_len, self.delay, self.calls = list(script), prompt_len, delay, 0

    def new_cache(self, batch, max_len=None, device=None, dtype=None):
        return KVCache(1, batch, 1, max_len or self.config.context_len, 1, "cpu", torch.float32)

    def forward(self, idx, cache=None, pos=0):
        self.calls += 1
        time.sleep(self.delay)
        batch, length = idx.shape
        cache.update(0, pos, torch.zeros(batch, 1, length, 1), torch.zeros(batch, 1, length, 1))
        written = torch.as_tensor(pos) + length - self.prompt_len  # ids of the answer so far
        logits = torch.zeros(batch, length, 257)
        for row, at in enumerate(written.expand(batch).tolist()):
            token = self.script[at] if 0 <= at < len(self.script) else 256
            logits[row, -1, token] = 100.0
        return logits


@contextlib.contextmanager
def serving(model, max_batch: int = 4):
    """uvicorn in a thread in front of `model`: (base URL, scheduler)."""
    import uvicorn

    tokenizer = ByteTokenizer()
    scheduler = Scheduler(model, tokenizer, max_batch=max_batch, max_queue=4)
    scheduler.start()
    app = create_app(ServedModel("scripted", tokenizer, model.config.context_len, 0), scheduler)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", scheduler
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        scheduler.close()
        sock.close()


MESSAGES = [{"role": "user", "content": "hello"}]


def _client(base):
    return openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=30)


def test_chat_stops_at_end_of_turn_and_never_returns_the_marker():
    prompt_len = len(chatml.render(MESSAGES).encode())
    model = ScriptedModel(b"Hi there!<|im_end|>\n<|im_start|>user\nmore", prompt_len)
    with serving(model) as (base, _):
        client = _client(base)
        reply = client.chat.completions.create(model="scripted", messages=MESSAGES,
                                               temperature=0)
        assert reply.choices[0].message.content == "Hi there!"
        assert reply.choices[0].finish_reason == "stop"
        chunks = list(client.chat.completions.create(model="scripted", messages=MESSAGES,
                                                     temperature=0, stream=True))
        deltas = [c.choices[0].delta.content or "" for c in chunks]
        assert "".join(deltas) == "Hi there!" and chunks[-1].choices[0].finish_reason == "stop"
        assert not any("<" in d for d in deltas)  # the marker's start was held back, then cut
        # eos ends a turn too; max_tokens ends it as "length"
        short = client.chat.completions.create(model="scripted", messages=MESSAGES,
                                               temperature=0, max_tokens=2)
        assert (short.choices[0].message.content, short.choices[0].finish_reason) == \
            ("Hi", "length")


def test_a_client_gone_mid_stream_frees_its_row():
    prompt_len = len(b"go")
    model = ScriptedModel(b"abcdefgh" * 30, prompt_len, delay=0.02)
    with serving(model) as (base, scheduler):
        stream = _client(base).completions.create(model="scripted", prompt="go",
                                                  max_tokens=200, temperature=0, stream=True)
        for _, _chunk in zip(range(3), stream):
            pass
        stream.close()
        deadline = time.monotonic() + 20
        while scheduler._rows and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not scheduler._rows, "the row of a gone client is still decoding"
        assert model.calls < 150  # far short of the 200 tokens it asked for


@pytest.mark.parametrize("max_batch", [1, 3])
def test_more_choices_than_slots_all_finish(max_batch):
    """n = 5 choices through 1 or 3 slots: rows join as others leave (continuous batching)."""
    model = ScriptedModel(b"xyz", len(b"p"))
    with serving(model, max_batch=max_batch) as (base, _):
        reply = _client(base).completions.create(model="scripted", prompt="p", n=5,
                                                 temperature=0, max_tokens=10)
    assert [c.text for c in reply.choices] == ["xyz"] * 5
    assert {c.finish_reason for c in reply.choices} == {"stop"}
    assert reply.usage.completion_tokens == 5 * 4  # three bytes and the eos, per choice


def test_a_client_gone_before_a_whole_answer_frees_its_row():
    import socket

    model = ScriptedModel(b"abcdefgh" * 30, len(b"go"), delay=0.02)
    with serving(model) as (base, scheduler):
        host, port = base.split("//")[1].split("/")[0].split(":")
        body = b'{"model": "scripted", "prompt": "go", "max_tokens": 200, "temperature": 0}'
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body)
            deadline = time.monotonic() + 20
            while not scheduler._rows and time.monotonic() < deadline:
                time.sleep(0.01)
        deadline = time.monotonic() + 20
        while scheduler._rows and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not scheduler._rows, "the row of a gone client is still decoding"
        assert model.calls < 150  # far short of the 200 tokens it asked for
