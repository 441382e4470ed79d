"""Continuous batching: one thread owns the model, and every decoding step is ONE forward pass
over all the requests in flight.

A request's choices become rows. A row joins the batch between steps: its prompt is prefilled
alone (the same forward, cache and positions as `tinylm generate` runs for it) and its keys and
values are copied into its row of one shared KV cache. Then each step samples a token for every
row and feeds all the rows' tokens through the model together, each at its own position (the
per-row positions of `models/common.py`: row b attends to its own keys [0, pos[b]] only). A row
that finishes (eos, a stop string, max_tokens, a client gone) leaves at once and the last row
moves into its slot, so the batch stays packed and a waiting request takes the slot next step.
This is the scheduling of Orca (Yu et al., OSDI 2022) and vLLM's continuous batching, without
paging: a tiny model's cache for every slot fits in memory whole. Block-sparse attention
(Blink-1's) takes one position per pass, so for such a model the rows are stepped in groups
of equal position: one pass per distinct length in the batch, still exact. A model whose cache
is not a KVCache (a BLT's: patcher, local and latent caches advancing at different rates)
gives each row a cache of its own and steps the rows one by one: served, exact, unbatched.

Each row samples with its own generator and the same `sample_next` as `tinylm generate`, so a
request's text does not depend on what else is in the batch (to float rounding of the batched
matmuls) and a seeded request equals `tinylm generate --seed` on the same prompt.

The event loop never waits on torch: `submit` only queues (or refuses at once when the queue is
full), and the thread hands tokens back with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import codecs
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from tinylm.infer.generate import decode_threads
from tinylm.infer.sampling import SamplingConfig, sample_next
from tinylm.models.common import KVCache


class QueueFull(Exception):
    """The waiting queue holds --max-queue requests already (the server answers 429)."""


# --------------------------------------------------------------------------- what flows

@dataclass
class Choice:
    """One completion to produce: a row of the batch once it is admitted."""
    index: int
    prompt: list[int]
    max_tokens: int
    sampling: SamplingConfig
    seed: int
    stops: tuple[str, ...] = ()


@dataclass
class Delta:
    index: int
    text: str


@dataclass
class Finished:
    index: int
    finish_reason: str  # "stop" (eos or a stop string) or "length" (max_tokens)
    completion_tokens: int


@dataclass
class Failed:
    message: str


class Job:
    """One API request: its choices, and the events the model thread sends back for them."""

    def __init__(self, choices: list[Choice], loop: asyncio.AbstractEventLoop):
        self.choices, self.loop = choices, loop
        self.pending = deque(choices)  # not yet admitted to the batch
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False  # set by the event loop (a client gone); read by the thread

    def emit(self, event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        self.cancelled = True


# --------------------------------------------------------------------------- a row

@dataclass
class _Row:
    job: Job
    choice: Choice
    generator: torch.Generator
    pos: int  # where the next token's key goes (= ids so far)
    logits: torch.Tensor | None = None  # (vocab,) for the next token
    last: int = -1  # the token just sampled: the next step's input
    made: int = 0
    text: str = ""
    sent: int = 0  # chars of `text` already streamed
    decoder: object = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(
        errors="replace"))
    cache: object = None  # the row's own cache, for models without a shared KVCache


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many chars at the end of `text` could be the start of a stop string (not streamed
    until the next token says whether the stop completes)."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class _RowsView(KVCache):
    """The first n rows of a KVCache, sharing its storage: the batch of one step."""

    def __init__(self, cache: KVCache, n: int):  # no allocation: views of the shared cache
        self.k, self.v, self.max_len = cache.k[:, :n], cache.v[:, :n], cache.max_len


class _Gathered(KVCache):
    """Copies of some rows of a KVCache, positions [0, length): a group stepped on its own."""

    def __init__(self, cache: KVCache, index: torch.Tensor, length: int):
        self.k, self.v = cache.k[:, index, :, :length], cache.v[:, index, :, :length]
        self.max_len = length


# --------------------------------------------------------------------------- the scheduler

class Scheduler:
    """Owns the model in one thread; `submit` queues a Job (or raises QueueFull)."""

    def __init__(self, model, tokenizer, max_batch: int, max_queue: int):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.context = model.config.context_len
        # Dense attention takes per-row positions; an `attention_fn` (block-sparse) takes one
        # position per pass, so rows are stepped in groups of equal position instead.
        self.per_row_positions = all(getattr(m, "attention_fn", None) is None
                                     for m in model.modules())
        # Rows share one KVCache (slots) when the model's cache is one; else each row owns its.
        self.shared_cache = isinstance(model.new_cache(1, 1), KVCache)
        self._waiting: deque[Job] = deque()
        self._rows: list[_Row] = []
        self._wake = threading.Condition()
        self._closed = False
        self._cache = None
        self._thread = threading.Thread(target=self._run, name="tinylm-serve-model", daemon=True)
        self.steps = 0  # batched decode passes run (for the log and the benchmark)
        self.rows_stepped = 0  # rows those passes carried

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=10)

    def submit(self, job: Job) -> None:
        with self._wake:
            # Requests that free slots take at the next step are not waiting in the queue.
            free = max(0, self.max_batch - len(self._rows))
            if len(self._waiting) >= self.max_queue + free:
                raise QueueFull(f"the server's queue is full ({self.max_queue} requests "
                                f"waiting); retry later")
            self._waiting.append(job)
            self._wake.notify()

    # ------------------------------------------------------------------ the model thread

    def _run(self) -> None:
        device = next(self.model.parameters()).device
        with torch.inference_mode(), decode_threads(self.model, self.max_batch):
            if self.shared_cache:
                self._cache = self.model.new_cache(self.max_batch, self.context)
            while True:
                joining = self._next_joining()
                if joining is None:
                    return
                try:
                    for job, choice in joining:
                        self._admit(job, choice, device)
                    self._step(device)
                except Exception as err:  # a model failure fails its requests, not the server
                    for job in {id(r.job): r.job for r in self._rows}.values():
                        job.emit(Failed(f"generation failed: {err}"))
                    for job, _ in joining:
                        job.emit(Failed(f"generation failed: {err}"))
                    self._rows.clear()

    def _next_joining(self) -> list[tuple[Job, Choice]] | None:
        """Wait for work; take waiting choices into free slots. None when closed."""
        with self._wake:
            while not self._closed and not self._rows and not self._waiting:
                self._wake.wait()
            if self._closed:
                return None
            joining = []
            free = self.max_batch - len(self._rows)
            while self._waiting and len(joining) < free:
                job = self._waiting[0]
                if job.cancelled or not job.pending:
                    self._waiting.popleft()
                    continue
                joining.append((job, job.pending.popleft()))
                if not job.pending:
                    self._waiting.popleft()
            return joining

    def _admit(self, job: Job, choice: Choice, device) -> None:
        """Prefill the prompt alone, then copy its keys and values into the next free slot."""
        if job.cancelled:
            return
        length = len(choice.prompt)
        one = self.model.new_cache(1, length if self.shared_cache else self.context)
        ids = torch.tensor([choice.prompt], device=device)
        logits = self.model(ids, one, 0)[0, -1]
        if self.shared_cache:
            slot = len(self._rows)
            self._cache.k[:, slot, :, :length] = one.k[:, 0]
            self._cache.v[:, slot, :, :length] = one.v[:, 0]
        generator = torch.Generator(device=device)
        generator.manual_seed(choice.seed)
        self._rows.append(_Row(job, choice, generator, length, logits,
                               cache=None if self.shared_cache else one))

    def _step(self, device) -> None:
        """Sample every row's next token, retire finished rows, run one pass over the rest."""
        for row in list(self._rows):
            if row.job.cancelled:
                self._retire(row)
                continue
            token = int(sample_next(row.logits[None], row.choice.sampling, None,
                                    row.generator)[0])
            row.made += 1
            reason = self._advance(row, token)
            if reason is not None:
                row.job.emit(Finished(row.choice.index, reason, row.made))
                self._retire(row)
        if not self._rows:
            return
        tokens = torch.tensor([r.last for r in self._rows], device=device)
        if not self.shared_cache:
            logits = self._step_own_caches(tokens)
        elif self.per_row_positions:
            pos = torch.tensor([r.pos for r in self._rows], device=device)
            view = _RowsView(self._cache, len(self._rows))
            logits = self.model(tokens[:, None], view, pos)[:, -1]  # ONE pass: (rows, vocab)
            self._count_pass(len(self._rows))
        else:
            logits = self._step_by_position(tokens, device)
        for row, row_logits in zip(self._rows, logits):
            row.logits = row_logits
            row.pos += 1

    def _step_by_position(self, tokens: torch.Tensor, device) -> torch.Tensor:
        """One pass per distinct position, for attention that takes one position for the whole
        batch (block-sparse, Blink's): the rows at that position are gathered out of the
        shared cache, stepped together, and written back."""
        by_pos: dict[int, list[int]] = {}
        for slot, row in enumerate(self._rows):
            by_pos.setdefault(row.pos, []).append(slot)
        logits = None
        for pos, slots in by_pos.items():
            index = torch.tensor(slots, device=device)
            group = _Gathered(self._cache, index, pos + 1)
            out = self.model(tokens[index][:, None], group, pos)[:, -1]  # (len(slots), vocab)
            self._cache.k[:, index, :, :pos + 1] = group.k
            self._cache.v[:, index, :, :pos + 1] = group.v
            logits = out.new_empty(len(self._rows), out.shape[-1]) if logits is None else logits
            logits[index] = out
            self._count_pass(len(slots))
        return logits

    def _step_own_caches(self, tokens: torch.Tensor) -> torch.Tensor:
        """One pass per row, each on its own cache (models without a shared KVCache)."""
        outs = []
        for i, row in enumerate(self._rows):
            outs.append(self.model(tokens[i:i + 1, None], row.cache, row.pos)[0, -1])
            self._count_pass(1)
        return torch.stack(outs)

    def _count_pass(self, rows: int) -> None:
        self.steps += 1
        self.rows_stepped += rows

    def _advance(self, row: _Row, token: int) -> str | None:
        """Take `token` into the row's text; stream what is safe; the finish reason, if any."""
        row.last = token
        if token == self.tokenizer.eos_id:
            self._send(row, len(row.text))
            return "stop"
        row.text += row.decoder.decode(self.tokenizer.decode_bytes([token]))
        stops = row.choice.stops
        search_from = max(0, row.sent - max((len(s) for s in stops), default=0))
        hits = [at for at in (row.text.find(s, search_from) for s in stops) if at >= 0]
        if hits:
            row.text = row.text[:min(hits)]
            self._send(row, len(row.text))
            return "stop"
        if row.made >= row.choice.max_tokens:
            row.text += row.decoder.decode(b"", final=True)
            self._send(row, len(row.text))
            return "length"
        self._send(row, len(row.text) - held_back(row.text, stops))
        return None

    def _send(self, row: _Row, upto: int) -> None:
        if upto > row.sent:
            row.job.emit(Delta(row.choice.index, row.text[row.sent:upto]))
            row.sent = upto

    def _retire(self, row: _Row) -> None:
        """Free the row's slot: the last row moves into it (its keys and values with it)."""
        slot, last = self._rows.index(row), len(self._rows) - 1
        if slot != last and self.shared_cache:
            moved = self._rows[last]
            self._cache.k[:, slot, :, :moved.pos] = self._cache.k[:, last, :, :moved.pos]
            self._cache.v[:, slot, :, :moved.pos] = self._cache.v[:, last, :, :moved.pos]
            self._rows[slot] = moved
            self._rows.pop()
        else:
            self._rows.pop(slot)
