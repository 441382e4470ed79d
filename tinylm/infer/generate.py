"""Generation with a pre-allocated KV cache, for one prompt or many.

The engine works on token ids. Prompts of equal length are prefilled together and decoded in
one batch; prompts of different lengths go in separate batches (exact, with no padding or
masks to get wrong). When a sequence reaches the model's context, the cache is rebuilt from the
last half-context of tokens and decoding goes on. `decode_batch` is the one decode loop: the
exported single-file script carries it verbatim (its `# %% export` region) and evaluation's
greedy answers run it, so all give the same ids for the same seed.
"""

from __future__ import annotations

import codecs
import contextlib
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch

from tinylm.errors import TinyLMError
from tinylm.infer.sampling import SamplingConfig, sample_next


@torch.inference_mode()
def generate_ids(model, prompts: list[list[int]], max_new_tokens: int, sampling: SamplingConfig,
                 seed: int | None = None, eos_id: int | None = None,
                 on_token: Callable[[int, int], None] | None = None) -> list[list[int]]:
    """Continue each prompt (a list of ids) by up to max_new_tokens ids; returns the new ids.

    Stops a row at `eos_id` (not included). `on_token(row, id)` streams tokens as they come.
    """
    if max_new_tokens < 0:
        raise TinyLMError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    for p in prompts:
        if not p:
            raise TinyLMError("empty prompt: give at least one token of text")
    generator = torch.Generator(device=model_device(model))
    generator.manual_seed(0 if seed is None else seed)
    by_length: dict[int, list[int]] = defaultdict(list)
    for row, p in enumerate(prompts):
        by_length[len(p)].append(row)
    results: list[list[int]] = [[] for _ in prompts]
    for rows in by_length.values():
        with decode_threads(model, len(rows)):
            outs = decode_batch(model, [prompts[r] for r in rows], max_new_tokens, sampling,
                                generator, eos_id,
                                None if on_token is None else
                                (lambda i, t, rows=rows: on_token(rows[i], t)))
        for r, out in zip(rows, outs):
            results[r] = out
    return results


# %% export (the decode loop: copied into the single-file export; see export/single_file.py)

# Decoding work per step (parameters x rows) up to which one CPU thread beats several.
ONE_THREAD_WORK = 100_000_000


@contextlib.contextmanager
def decode_threads(model, batch: int):
    """Decode on one CPU thread when a step is small, then restore the thread count.

    A tiny model's decoding step is a few hundred small ops; splitting each over threads costs
    more in wake-ups and barriers than it saves (Glint-1.3 shape on this 2-core CPU: 2,157
    against 355 tok/s at batch 1, 18,704 against 11,628 at batch 64;
    benchmarks/bench_train_generate.py). Past ONE_THREAD_WORK the matmuls are big enough to
    share. torch's thread count is process-wide, so this is not for concurrent callers.
    """
    work = batch * sum(p.numel() for p in model.parameters())
    threads = torch.get_num_threads()
    if model_device(model).type != "cpu" or threads == 1 or work > ONE_THREAD_WORK:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def decode_batch(model, prompts, max_new_tokens, sampling, generator=None, eos_id=None,
                 on_token=None):
    """The decode loop: continue equal-length prompts together; the rows' new ids, each cut at
    its first eos. What `tinylm generate`, evaluation's greedy answers and the exported single
    file all run.

    The prompt is cut to its last context - 1 ids; when a row reaches the context, the cache is
    rebuilt from the newest context // 2 ids and decoding goes on. A model without `new_cache`
    is run on that same window every step (slower, same logits). `on_token(row, id)` gets each
    id up to the row's eos; if it returns True (exactly), that row is finished (a stop string).
    Per step only what the step needs: sample, store, check eos, stream, one model step; `seen`
    is kept only when a repetition penalty reads it.
    """
    device = model_device(model)
    context = model.config.context_len
    batch, length = len(prompts), len(prompts[0])
    history = torch.empty(batch, length + max_new_tokens, dtype=torch.long, device=device)
    history[:, :length] = torch.tensor(prompts, device=device)  # every id so far
    seen = None
    if sampling.repetition_penalty != 1.0:  # the penalty is the only reader of `seen`
        seen = torch.zeros(batch, model.config.vocab_size, dtype=torch.bool, device=device)
        seen.scatter_(1, history[:, :length], True)
    start = max(0, length - (context - 1))  # the window the model sees starts here
    cached = callable(getattr(model, "new_cache", None))
    cache = model.new_cache(batch, context) if cached else None
    logits = model(history[:, start:length], cache, 0)[:, -1] if cached else \
        model(history[:, start:length])[:, -1]
    pos = length - start
    fast = getattr(model, "fast_decoder", None) if cached else None
    decoder = fast() if fast is not None else None
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    streamed = [False] * batch  # rows whose eos (or stop) the stream has passed
    made = 0
    while made < max_new_tokens:
        next_ids = sample_next(logits, sampling, seen, generator)  # (B,)
        history[:, length + made] = next_ids
        made += 1
        if on_token is not None:
            _stream(next_ids.tolist(), eos_id, streamed, on_token)
            if any(streamed):
                finished |= torch.tensor(streamed, device=device)
        if eos_id is not None:
            finished |= next_ids == eos_id
        if bool(finished.all()) or made == max_new_tokens:  # no logits needed after that
            break
        if seen is not None:
            seen.scatter_(1, next_ids[:, None], True)
        end = length + made
        if pos == context:  # the context is full: keep the newest half and rebuild the cache
            start, pos = end - context // 2, context // 2
            cache = model.new_cache(batch, context) if cached else None
            logits = model(history[:, start:end], cache, 0)[:, -1] if cached else \
                model(history[:, start:end])[:, -1]
        elif not cached:
            logits = model(history[:, start:end])[:, -1]
            pos += 1
        elif decoder is not None:
            logits = decoder.step(next_ids, cache, pos)
            pos += 1
        else:
            logits = model(next_ids[:, None], cache, pos)[:, -1]
            pos += 1
    new = history[:, length:length + made]
    ends = [made] * batch
    if eos_id is not None:
        hit = new == eos_id
        ends = torch.where(hit.any(dim=1), hit.int().argmax(dim=1), made).tolist()
    return [row[:end] for row, end in zip(new.tolist(), ends)]


def _stream(tokens: list[int], eos_id, streamed: list[bool], on_token) -> None:
    """Hand each row's new token to on_token, up to (not including) the row's first eos; a
    row whose on_token returns True is done too."""
    for row, token in enumerate(tokens):
        if streamed[row]:
            continue
        if token == eos_id or on_token(row, token) is True:
            streamed[row] = True
# %% end export


class LoadedModel:
    """A checkpoint made usable: model + tokenizer + metadata, with text in and text out."""

    def __init__(self, model, tokenizer, meta: dict, path: Path | None = None):
        self.model, self.tokenizer, self.meta, self.path = model, tokenizer, meta, path

    @classmethod
    def from_checkpoint(cls, path, device="cpu") -> "LoadedModel":
        from tinylm.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        return cls(ckpt.build_model(device), ckpt.tokenizer, ckpt.meta, Path(path))

    def encode_prompt(self, prompt: str | bytes) -> list[int]:
        if isinstance(prompt, bytes):
            try:
                prompt.decode("utf-8")
            except UnicodeDecodeError:
                if self.tokenizer.kind == "unigram":
                    raise TinyLMError("prompt is not valid UTF-8 text") from None
        ids = self.tokenizer.encode(prompt)
        if not ids:
            raise TinyLMError("empty prompt: give at least one character of text")
        return ids

    def generate(self, prompt: str, max_new_tokens: int = 100, temperature: float = 0.8,
                 top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 seed: int | None = 0, stream: Callable[[str], None] | None = None) -> str:
        return self.generate_batch([prompt], max_new_tokens, temperature, top_k, top_p,
                                   repetition_penalty, seed, stream)[0]

    def generate_batch(self, prompts: list[str], max_new_tokens: int = 100,
                       temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0,
                       repetition_penalty: float = 1.0, seed: int | None = 0,
                       stream: Callable[[str], None] | None = None) -> list[str]:
        sampling = SamplingConfig(temperature, top_k, top_p, repetition_penalty)
        encoded = [self.encode_prompt(p) for p in prompts]
        on_token = None
        if stream is not None and len(prompts) == 1:
            decoder = _StreamDecoder(self.tokenizer, stream)
            on_token = lambda row, token: decoder.push(token)  # noqa: E731
        new = generate_ids(self.model, encoded, max_new_tokens, sampling, seed,
                           self.tokenizer.eos_id, on_token)
        if on_token is not None:
            decoder.flush()
        return [self.tokenizer.decode(ids) for ids in new]


class _StreamDecoder:
    """Prints tokens as they come without splitting a UTF-8 character across two writes.

    The standard library's incremental UTF-8 decoder, with errors replaced: the same text as
    decoding all the bytes at once, and the same as the exported single file streams."""

    def __init__(self, tokenizer, write):
        self.tokenizer, self.write = tokenizer, write
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> None:
        text = self.decoder.decode(self.tokenizer.decode_bytes([token]))
        if text:
            self.write(text)

    def flush(self) -> None:
        text = self.decoder.decode(b"", final=True)
        if text:
            self.write(text)
