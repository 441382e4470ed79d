"""Packed token files: a corpus tokenized once into a flat memory-mapped array.

Layout (one pair per data set, split and tokenizer):
    <cache>/<name>-<split>-<tokenizer hash[:16]>.bin    uint16 (vocab <= 65536) or uint32 ids
    <cache>/<name>-<split>-<tokenizer hash[:16]>.json   sidecar: tokenizer hash, source sha256,
                                                        document and token counts, dtype, ...
EOS is written after every document. The sidecar is checked on every load: another tokenizer,
a changed source file, another split setting or a size mismatch means the cache is stale and is
rebuilt (with a message), never silently reused. Both files are written to temporary names and
renamed into place, sidecar last, so a killed build leaves no cache that looks valid.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinylm.data.sources import ResolvedDataset, in_validation, resolve_dataset
from tinylm.errors import TinyLMError
from tinylm.io import default_cache_dir as _cache_dir
from tinylm.io import write_text_atomic
from tinylm.tokenizers.base import Tokenizer

FORMAT, VERSION = "tinylm-tokens", 1
BATCH_DOCS = 512  # documents handed to the tokenizer at once (it parallelises inside a batch)


def default_cache_dir() -> Path:
    return _cache_dir("tokens")


@dataclass
class PackedTokens:
    tokens: np.ndarray      # memory-mapped, read-only
    meta: dict

    def __len__(self) -> int:
        return len(self.tokens)


def split_documents(dataset: ResolvedDataset, split: str, val_permille: int):
    want_val = split == "val"
    for doc in dataset.documents():
        if in_validation(doc, val_permille) == want_val:
            yield doc


def expected_meta(dataset: ResolvedDataset, split: str, tokenizer: Tokenizer,
                  val_permille: int) -> dict:
    meta = {"format": FORMAT, "version": VERSION, "dataset": dataset.name, "split": split,
            "val_permille": val_permille, "tokenizer_hash": tokenizer.content_hash(),
            "source_sha256": dataset.fingerprint()}
    if dataset.split_note:  # documents cut by lines or chunks: part of what the cache holds
        meta["documents_by"] = dataset.split_note
    return meta


def check_splits(name: str, data_dir=None, val_permille: int = 50, log=print) -> dict:
    """Before anything is written: both splits of `name` (of each source of a mixture) must get
    at least one document. Stops reading as soon as both have one. Says how a file without
    separators was split."""
    from tinylm.data.mixture import parse_mixture

    sources = parse_mixture(name)
    if len(sources) > 1:
        return {source: check_splits(source, data_dir, val_permille, log)
                for source, _ in sources}
    name = sources[0][0]
    dataset = resolve_dataset(name, data_dir)
    if dataset.hf_name is not None:
        return {}
    counts = {"train": 0, "val": 0}
    for doc in dataset.documents():
        counts["val" if in_validation(doc, val_permille) else "train"] += 1
        if counts["train"] and counts["val"]:
            if dataset.split_note:
                log(dataset.split_note)
            return counts
    total = counts["train"] + counts["val"]
    if total == 0:
        raise TinyLMError(f"data set {name!r} holds no text (no documents)")
    empty = "validation" if counts["val"] == 0 else "training"
    raise TinyLMError(f"data set {name!r}: its {total} document(s) leave the {empty} split "
                      f"empty at --val-permille {val_permille}; add text or change "
                      f"--val-permille")


def load_or_build(name: str, split: str, tokenizer: Tokenizer, data_dir=None, cache_dir=None,
                  val_permille: int = 50, log=print) -> PackedTokens:
    if split not in ("train", "val"):
        raise TinyLMError(f"split must be 'train' or 'val', got {split!r}")
    dataset = resolve_dataset(name, data_dir)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    stem = f"{dataset.name.replace('/', '_')}-{split}-{tokenizer.content_hash()[:16]}"
    bin_path, meta_path = cache / f"{stem}.bin", cache / f"{stem}.json"
    want = expected_meta(dataset, split, tokenizer, val_permille)
    reason = stale_reason(bin_path, meta_path, want)
    if reason:
        if meta_path.exists() or bin_path.exists():
            log(f"rebuilding token cache {bin_path.name}: {reason}")
        build(dataset, split, tokenizer, val_permille, bin_path, meta_path, want)
    meta = json.loads(meta_path.read_text())
    if meta["tokens"] == 0:  # before the memmap, which cannot map an empty file
        raise TinyLMError(f"data set {name!r} has no documents in its {split} split")
    tokens = np.memmap(bin_path, dtype=meta["dtype"], mode="r", shape=(meta["tokens"],))
    return PackedTokens(tokens, meta)


def stale_reason(bin_path: Path, meta_path: Path, want: dict) -> str | None:
    if not meta_path.exists() or not bin_path.exists():
        return "no cache yet"
    try:
        have = json.loads(meta_path.read_text())
    except ValueError:
        return "unreadable sidecar"
    for key, value in want.items():
        if have.get(key) != value:
            return f"{key} changed"
    itemsize = np.dtype(have["dtype"]).itemsize
    if bin_path.stat().st_size != have["tokens"] * itemsize:
        return "token file has the wrong size"
    return None


def build(dataset, split, tokenizer, val_permille, bin_path: Path, meta_path: Path, want: dict):
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    if dataset.curated is not None:  # a dataset folder: tokenized part by part by the engine
        from tinylm.data.curate.shards import pack_split

        counts = pack_split(dataset.curated, split, tokenizer, val_permille, bin_path)
        _write_meta(meta_path, want, tokenizer, dtype, counts["documents"], counts["tokens"])
        return
    tmp = bin_path.with_name(f".{bin_path.name}.{os.getpid()}.tmp")
    documents = tokens = 0
    try:
        with open(tmp, "wb") as out:
            batch: list[str] = []
            for doc in split_documents(dataset, split, val_permille):
                batch.append(doc)
                if len(batch) == BATCH_DOCS:
                    tokens += _write_batch(out, batch, tokenizer, dtype)
                    documents += len(batch)
                    batch = []
            if batch:
                tokens += _write_batch(out, batch, tokenizer, dtype)
                documents += len(batch)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, bin_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_meta(meta_path, want, tokenizer, dtype, documents, tokens)


def _write_meta(meta_path: Path, want: dict, tokenizer, dtype, documents: int, tokens: int):
    meta = {**want, "dtype": np.dtype(dtype).name, "documents": documents, "tokens": tokens,
            "eos_id": tokenizer.eos_id, "eos_between_documents": True,
            "vocab_size": tokenizer.vocab_size}
    write_text_atomic(meta_path, json.dumps(meta, indent=1))


def _write_batch(out, batch: list[str], tokenizer: Tokenizer, dtype) -> int:
    encoded = tokenizer.encode_batch(batch)
    flat = np.fromiter((t for ids in encoded for t in (*ids, tokenizer.eos_id)), dtype=dtype)
    out.write(flat.tobytes())
    return len(flat)


def tokenizer_training_texts(name: str, data_dir=None, val_permille: int = 50,
                             max_chars: int = 50_000_000):
    """Train-split documents, capped, for fitting a tokenizer (never sees validation text).
    For a mixture (`data/mixture.py`), each source gives its weight's share of the cap."""
    from tinylm.data.mixture import parse_mixture

    for source, weight in parse_mixture(name):
        seen, cap = 0, max_chars * weight
        for doc in split_documents(resolve_dataset(source, data_dir), "train", val_permille):
            yield doc
            seen += len(doc)
            if seen >= cap:
                break


if __name__ == "__main__":  # pragma: no cover
    sys.exit("token caches are built by `tinylm train`; `tinylm data list` shows the data sets")
