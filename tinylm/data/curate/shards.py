"""Packed token shards of a dataset folder, made through the engine (`engine.tokenize_parts`).

`tinylm data tokenize DATASET --tokenizer T --out SHARDS` writes one train and one validation
shard per part (uint16 or uint32 ids, EOS after every document, the split of `pack.py`), plus
shards.json naming the dataset's manifest and the tokenizer; with --workers N the parts are
tokenized by datatrove workers. `tinylm train --data DATASET` packs through the same function
(`pack_split`, one worker), and concatenating the shards in part order gives exactly the bytes
`pack.build` writes for the same documents one after another (tested).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tinylm.data.curate.dataset import open_dataset
from tinylm.data.curate.engine import tokenize_parts
from tinylm.errors import TinyLMError
from tinylm.io import write_text_atomic

SHARDS_FORMAT = "tinylm-token-shards"


def check_shards_output(out: Path, force: bool) -> None:
    if not out.exists():
        if not out.parent.is_dir():
            raise TinyLMError(f"--out {out}: its parent folder does not exist")
        return
    ours = False
    try:
        ours = json.loads((out / "shards.json").read_text()).get("format") == SHARDS_FORMAT
    except (OSError, ValueError, AttributeError):
        pass
    if not ours:
        raise TinyLMError(f"--out {out} exists and is not a shards folder of tinylm's; it is "
                          f"never replaced (choose another output)")
    if not force:
        raise TinyLMError(f"--out {out} exists; pass --force to replace it")


def write_shards(dataset_path, tokenizer_path, out: Path, val_permille: int = 50,
                 workers: int = 1, engine: str = "auto", force: bool = False) -> dict:
    if not 1 <= val_permille < 1000:
        raise TinyLMError(f"--val-permille must be in [1, 1000), got {val_permille}")
    dataset = open_dataset(dataset_path)
    check_shards_output(out, force)
    temp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    try:
        counts = tokenize_parts(dataset, tokenizer_path, temp, val_permille, workers, engine)
        from tinylm.tokenizers import load_tokenizer

        info = {"format": SHARDS_FORMAT, "dataset": dataset.name,
                "manifest_sha256": dataset.manifest_sha256,
                "tokenizer_hash": load_tokenizer(tokenizer_path).content_hash(),
                "val_permille": val_permille, "eos_between_documents": True, **counts}
        write_text_atomic(temp / "shards.json", json.dumps(info, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return counts


def pack_split(dataset_path, split: str, tokenizer, val_permille: int, bin_path: Path) -> dict:
    """Tokenize the dataset's parts (in this process) and join the `split` shards, in part
    order, into `bin_path` (written to a temporary name, then renamed). Returns counts."""
    dataset = open_dataset(dataset_path, verify=False)  # the token cache checks the hashes
    work = bin_path.parent / f".{bin_path.name}.{os.getpid()}.shards.tmp"
    shutil.rmtree(work, ignore_errors=True)
    tmp = bin_path.with_name(f".{bin_path.name}.{os.getpid()}.tmp")
    try:
        counts = tokenize_parts(dataset, tokenizer, work, val_permille, 1, "inprocess")
        with open(tmp, "wb") as out:
            for index in range(counts["parts"]):
                shard_path = work / f"part-{index:05d}.{split}.bin"
                if shard_path.exists():
                    with open(shard_path, "rb") as shard:
                        shutil.copyfileobj(shard, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, bin_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"documents": counts[f"documents_{split}"], "tokens": counts[split],
            "dtype": counts["dtype"]}
