"""Conversations for `tinylm sft`: where they come from, how they become token rows, and the
(train, val) sources the training loop reads.

Sources, comma-separated in `--data`:
- `gsm8k`: GSM8K train (Cobbe et al. 2021), `instruct/gsm8k/train.jsonl` of the data dir:
  question -> user turn, answer (worked solution ending in `#### N`) -> assistant turn;
- `self-instruct`: the 175 Self-Instruct seed tasks (Wang et al. 2023),
  `instruct/self-instruct-seed/seed_tasks.jsonl`: instruction (+ "\\n\\n" + input, when there
  is one) -> user, output -> assistant, one conversation per instance;
- a path to a .jsonl file whose every line is an object with a `messages` list of
  {"role", "content"} turns (the OpenAI / Hugging Face chat layout);
- `hf:NAME[:CONFIG]`: a Hugging Face data set with a `messages` column, when the `datasets`
  package is installed and the hub is reachable.
Every conversation must hold at least one assistant turn (there would be nothing to train).

Rows. A conversation is encoded segment by segment (`chatml.segments`), with a mask that is 1
on the ids of an assistant turn's content and its `<|im_end|>`, and EOS after it. Encoding by
segment is how chat sees the text too: the prompt ends at `<|im_start|>assistant\\n`, the
answer is generated after it. Conversations are packed in order into rows of seq_len + 1 ids:
a row takes whole conversations while they fit, then is padded with EOS (masked out; padding
sits after every real id, so causal attention never reads it). A conversation longer than a
row is cut into consecutive rows (each next row starts at the last id of the one before, so
every target is predicted once); a row with no assistant id is dropped.

Attention across packed conversations is not masked: a later conversation in a row can attend
to the earlier ones, across the EOS between them, exactly as pre-training packs documents
(`data/pack.py`). The model families have no document mask to give, and the loss mask already
keeps every target inside its own conversation's assistant turn; Krell et al. 2021 ("Efficient
sequence packing without cross-contamination") measure such cross-attention as a small effect.

Targets outside assistant turns are -100, the ignore index of `F.cross_entropy`, so the loop's
own loss (`loop.lm_loss`) is the mean over assistant tokens with no change to the loop. The
batch of a step is a pure function of (seed, step, micro-step), as in pre-training, so resume
is exact. Train/validation: a conversation goes to validation by the hash of its rendered text
(`sources.in_validation`, `val_permille`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinylm.errors import TinyLMError
from tinylm.infer import chatml

IGNORE = -100  # F.cross_entropy's default ignore_index

NAMED_SETS = {
    "gsm8k": ("instruct/gsm8k/train.jsonl", "GSM8K train, 7,473 question/answer pairs"),
    "self-instruct": ("instruct/self-instruct-seed/seed_tasks.jsonl",
                      "the 175 Self-Instruct seed tasks"),
}


# --------------------------------------------------------------------------- reading

def gsm8k_messages(row: dict) -> list[dict]:
    return [{"role": "user", "content": row["question"]},
            {"role": "assistant", "content": row["answer"]}]


def self_instruct_messages(row: dict) -> list[list[dict]]:
    out = []
    for instance in row["instances"]:
        prompt = row["instruction"]
        if instance.get("input"):
            prompt = f"{prompt}\n\n{instance['input']}"
        out.append([{"role": "user", "content": prompt},
                    {"role": "assistant", "content": instance["output"]}])
    return out


def _jsonl_rows(path: Path):
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise TinyLMError(f"{path}: not UTF-8 text ({err})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise TinyLMError(f"{path}:{n}: not a JSON line ({err})") from None
        if not isinstance(row, dict):
            raise TinyLMError(f"{path}:{n}: expected a JSON object")
        yield n, row


def _checked(messages, where: str) -> list[dict]:
    chatml.check_messages(messages, where)
    if not any(turn["role"] == "assistant" for turn in messages):
        raise TinyLMError(f"{where}: no assistant turn (nothing to train on)")
    return messages


def read_source(name: str, data_dir=None) -> tuple[list[list[dict]], dict]:
    """(conversations, fingerprint) of one source of `--data`."""
    from tinylm.data.sources import check_hub, resolve_data_dir
    from tinylm.io import sha256_file

    if name in NAMED_SETS:
        path = resolve_data_dir(data_dir) / NAMED_SETS[name][0]
        if not path.is_file():
            raise TinyLMError(f"instruct set {name!r}: {path} not found")
        convert = gsm8k_messages if name == "gsm8k" else self_instruct_messages
        conversations = []
        for n, row in _jsonl_rows(path):
            try:
                made = convert(row)
            except (KeyError, TypeError) as err:
                raise TinyLMError(f"{path}:{n}: not a {name} row (missing {err})") from None
            conversations += made if name == "self-instruct" else [made]
        return [_checked(c, f"{path}") for c in conversations], {name: sha256_file(path)}
    if name.startswith("hf:"):
        check_hub(name)
        return _hub_conversations(name[3:]), {name: "hub"}
    path = Path(name)
    if path.suffix != ".jsonl" or not path.is_file():
        raise TinyLMError(f"unknown instruct data {name!r}: use {', '.join(NAMED_SETS)}, a "
                          f".jsonl file with a messages field, or hf:NAME")
    conversations = []
    for n, row in _jsonl_rows(path):
        if "messages" not in row:
            raise TinyLMError(f"{path}:{n}: no 'messages' field")
        conversations.append(_checked(row["messages"], f"{path}:{n}: messages"))
    if not conversations:
        raise TinyLMError(f"{path}: no conversations")
    return conversations, {path.name: sha256_file(path)}


def _hub_conversations(spec: str) -> list[list[dict]]:  # pragma: no cover - needs a hub
    import datasets

    name, _, config = spec.partition(":")
    rows = datasets.load_dataset(name, config or None, split="train")
    if "messages" not in rows.column_names:
        raise TinyLMError(f"hf:{spec}: no 'messages' column (has {rows.column_names})")
    return [_checked(list(r["messages"]), f"hf:{spec}") for r in rows]


def read_conversations(data: str, data_dir=None) -> tuple[list[list[dict]], dict]:
    """All conversations of a comma-separated `--data`, in order, and their fingerprint."""
    names = [n.strip() for n in data.split(",") if n.strip()]
    if not names:
        raise TinyLMError("--data names no instruct data")
    conversations, prints = [], {}
    for name in names:
        found, fingerprint = read_source(name, data_dir)
        conversations += found
        prints.update(fingerprint)
    return conversations, prints


# --------------------------------------------------------------------------- rows

def encode_conversation(tokenizer, messages) -> tuple[list[int], list[int]]:
    """(ids, mask): mask 1 on the ids the model is trained to write."""
    ids, mask = [], []
    for segment in chatml.segments(messages):
        piece = tokenizer.encode(segment.text)
        ids += piece
        mask += [int(segment.trained)] * len(piece)
    return ids, mask


def pack_rows(encoded, width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) conversations -> rows (n, width) of ids and masks; see the module doc."""
    rows: list[tuple[list[int], list[int]]] = []
    current: tuple[list[int], list[int]] = ([], [])

    def flush():
        if current[0]:
            rows.append((current[0][:], current[1][:]))
            current[0].clear()
            current[1].clear()

    for ids, mask in encoded:
        if len(ids) > width:
            flush()
            for start in range(0, len(ids) - 1, width - 1):
                rows.append((ids[start:start + width], mask[start:start + width]))
            continue
        if len(current[0]) + len(ids) > width:
            flush()
        current[0].extend(ids)
        current[1].extend(mask)
    flush()
    kept = [(i, m) for i, m in rows if any(m[1:])]  # a target to train on
    out_ids = np.full((len(kept), width), pad_id, dtype=np.int64)
    out_mask = np.zeros((len(kept), width), dtype=np.bool_)
    for r, (i, m) in enumerate(kept):
        out_ids[r, :len(i)] = i
        out_mask[r, :len(m)] = m
    return out_ids, out_mask


@dataclass
class ChatRows:
    """Packed rows of one split; what the training loop reads (see data/sampler.py)."""
    ids: np.ndarray        # (n, width) int64
    mask: np.ndarray       # (n, width) bool: trained ids

    def __len__(self) -> int:
        return int(self.mask.sum())

    def _xy(self, picks):
        """(x, y) tensors of the picked rows; y is -100 where the target is not trained."""
        import torch

        ids, mask = torch.from_numpy(self.ids[picks]), torch.from_numpy(self.mask[picks])
        y = ids[:, 1:].masked_fill(~mask[:, 1:], IGNORE)
        return ids[:, :-1].contiguous(), y.contiguous()

    def _check(self, seq_len: int) -> None:
        if seq_len + 1 != self.ids.shape[1]:
            raise TinyLMError(f"chat rows are {self.ids.shape[1]} ids wide, not seq_len + 1 = "
                              f"{seq_len + 1}")

    def train_batch(self, seq_len, global_batch, seed, step, micro=0, rank=0, world=1):
        """Rows drawn by a generator seeded with (seed, step, micro): a pure function."""
        self._check(seq_len)
        rng = np.random.default_rng([seed, step, micro])
        picks = rng.integers(0, len(self.ids), size=global_batch)
        per_rank = global_batch // world
        return self._xy(picks[rank * per_rank:(rank + 1) * per_rank])

    def validation_batches(self, seq_len, batch, n_batches):
        """The first n_batches * batch rows, in order: the same set at every evaluation."""
        self._check(seq_len)
        count = min(len(self.ids), n_batches * batch)
        for start in range(0, count, batch):
            yield self._xy(np.arange(start, min(count, start + batch)))


def split_conversations(conversations, val_permille: int):
    from tinylm.data.sources import in_validation

    train, val = [], []
    for messages in conversations:
        (val if in_validation(chatml.render(messages, False), val_permille) else train).append(
            messages)
    return train, val


def build_rows(conversations, tokenizer, seq_len: int, val_permille: int,
               where: str = "--data") -> tuple[ChatRows, ChatRows, dict]:
    """(train rows, val rows, counts) for the loop; refuses a split that gets no rows."""
    counts = {}
    splits = []
    for name, part in zip(("train", "val"), split_conversations(conversations, val_permille)):
        encoded = (encode_conversation(tokenizer, m) for m in part)
        ids, mask = pack_rows([(i + [tokenizer.eos_id], m + [0]) for i, m in encoded],
                              seq_len + 1, tokenizer.eos_id)
        if len(ids) == 0:
            raise TinyLMError(f"{where}: the {name} split gets no conversation ({len(part)} of "
                              f"{len(conversations)}); give more conversations or change "
                              f"--val-permille")
        counts[name] = {"conversations": len(part), "rows": len(ids),
                        "trained_tokens": int(mask.sum())}
        splits.append(ChatRows(ids, mask))
    return splits[0], splits[1], counts


_ROWS: dict[str, tuple] = {}  # this process's packed rows, by what decides them


def rows_for(conversations, fingerprint: dict, tokenizer, seq_len: int, val_permille: int):
    """`build_rows`, remembered for this process: `tinylm sft` packs once to check the data
    before writing anything, and the loop's start then reuses those rows instead of encoding
    every conversation again (minutes for GSM8K with BPE on a loaded 2-core machine)."""
    key = json.dumps([fingerprint, tokenizer.content_hash(), seq_len, val_permille],
                     sort_keys=True)
    if key not in _ROWS:
        _ROWS.clear()  # one data set at a time: rows are big
        _ROWS[key] = build_rows(conversations, tokenizer, seq_len, val_permille)
    return _ROWS[key]


def chat_token_sources(spec, config, tokenizer):
    """The loop's hook (loop.DATA_KINDS["chat"]): (train, val) rows of the run's data, checked
    against the fingerprint the run recorded, so a resume trains on the same conversations."""
    conversations, fingerprint = read_conversations(spec.data, spec.data_dir)
    recorded = ((spec.notes or {}).get("sft") or {}).get("data_sha256")
    if recorded is not None and recorded != fingerprint:
        raise TinyLMError(f"the instruct data {spec.data} changed since this run started "
                          f"(sha256 differs); start a new run")
    seq_len = config.seq_len or spec.model_config["context_len"]
    train, val, counts = rows_for(conversations, fingerprint, tokenizer, seq_len,
                                  config.val_permille)
    print(f"sft data: {counts['train']['conversations']} train conversations in "
          f"{counts['train']['rows']} rows ({counts['train']['trained_tokens']:,} assistant "
          f"tokens), {counts['val']['conversations']} validation", flush=True)
    return train, val
