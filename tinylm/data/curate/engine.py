"""Running a per-row step over a dataset's parts: in this process, or as datatrove blocks.

A step (`RowStep`) maps one row to a row or to None (dropped): a filter, a scorer. A dataset is
split into parts (`dataset.py`), and part i of the input becomes part i of the output, written
whole by whichever worker took it; so the output's bytes do not depend on how many workers ran
or in what order they finished, and 1 worker and 2 workers give the same manifest (tested).

Two engines:

  inprocess   the parts one after another in this process (the default with --workers 1).
  datatrove   HuggingFace datatrove's `LocalPipelineExecutor(tasks=parts, workers=N)`: our
              `DatasetPartsReader` -> `RowStepBlock` -> `DatasetPartsWriter` pipeline blocks,
              rank r taking parts r, r+N, ... (datatrove's own sharding convention). The same
              blocks run unchanged under datatrove's Slurm and Ray executors for corpora that
              outgrow one machine; we do not write an engine of our own.

Tokenizing into packed training shards goes the same way (`tokenize_parts`): each part's
documents become token files for the train and validation split, concatenated in part order
by `pack.py`, byte-identical to tokenizing the rows one after another.

Memory: one row per block at a time (a tokenizer batch for tokenizing); no step holds a part.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tinylm.data.curate.dataset import (
    Dataset,
    DatasetWriter,
    iter_part,
    now_utc,
    row_line,
)
from tinylm.errors import TinyLMError

ENGINES = ("auto", "inprocess", "datatrove")


class RowStep:
    """One row in, one row (possibly changed) or None out. Subclasses hold only picklable
    settings: datatrove sends the step to its workers."""

    name = "step"

    def settings(self) -> dict:
        return {}

    def __call__(self, row: dict) -> dict | None:
        raise NotImplementedError


def pick_engine(engine: str, workers: int) -> str:
    if engine not in ENGINES:
        raise TinyLMError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if not isinstance(workers, int) or workers < 1:
        raise TinyLMError(f"--workers must be a whole number >= 1, got {workers!r}")
    if engine == "auto":
        engine = "inprocess" if workers == 1 else "datatrove"
    if engine == "inprocess" and workers != 1:
        raise TinyLMError("--engine inprocess runs one worker; use --engine datatrove for "
                          "--workers > 1")
    if engine == "datatrove":
        require_datatrove()
    return engine


def require_datatrove() -> None:
    import importlib.util

    if importlib.util.find_spec("datatrove") is None:
        raise TinyLMError("--workers > 1 (or --engine datatrove) needs datatrove (pip install "
                          "'tinylm[curate]')")


# ---------------------------------------------------------------------------- row steps

def run_row_step(dataset: Dataset, step: RowStep, writer: DatasetWriter, workers: int = 1,
                 engine: str = "auto") -> dict:
    """Apply `step` to every row of `dataset`, writing the output parts into `writer` (which
    the caller closes). Returns {"rows_in", "rows_out", "engine", "workers"}."""
    engine = pick_engine(engine, workers)
    parts = [str(p) for p in dataset.parts]
    out_dir = writer.rows_dir
    if engine == "inprocess":
        for index, part in enumerate(parts):
            _write_part(out_dir, index, (step(row) for row in iter_part(Path(part))))
    else:
        _run_datatrove([DatasetPartsReader(parts), RowStepBlock(step),
                        DatasetPartsWriter(str(out_dir))], len(parts), workers,
                       writer.path.parent)
    rows_out = _settle_parts(out_dir, len(parts))
    writer.add_part_rows(rows_out)
    return {"rows_in": dataset.row_count(), "rows_out": rows_out, "engine": engine,
            "workers": workers}


def part_name(index: int) -> str:
    return f"part-{index:05d}.jsonl"


def _write_part(out_dir: Path, index: int, rows) -> None:
    with open(out_dir / part_name(index), "w", encoding="utf-8") as f:
        for row in rows:
            if row is not None:
                f.write(row_line(row))


def _settle_parts(out_dir: Path, count: int) -> int:
    """Drop empty parts (every engine the same way) and count the rows that remain."""
    rows = 0
    for index in range(count):
        path = out_dir / part_name(index)
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
        elif path.exists():
            with open(path, "rb") as f:
                rows += sum(1 for _ in f)
    return rows


def _run_datatrove(pipeline: list, tasks: int, workers: int, beside: Path) -> None:
    """Run the blocks on datatrove's local executor; its logs go to a temporary folder in
    `beside`, removed afterwards."""
    from datatrove.executor import LocalPipelineExecutor

    logs = Path(tempfile.mkdtemp(prefix=f".datatrove.{os.getpid()}.", suffix=".tmp",
                                 dir=beside))
    try:
        with _stderr_to(logs / "stderr.log"):
            # skip_completed=False: every run is a fresh job, never a resume of an old one
            LocalPipelineExecutor(pipeline, tasks=max(1, tasks),
                                  workers=min(workers, max(1, tasks)), logging_dir=str(logs),
                                  skip_completed=False, start_method=start_method()).run()
    except Exception as err:  # noqa: BLE001 - a worker's error arrives wrapped by multiprocess
        raise TinyLMError(f"datatrove run failed: {_root_cause(err)}") from None
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def start_method() -> str:
    """How datatrove starts its workers. "fork" starts in milliseconds (spawn and forkserver
    re-import everything: about 3 s a worker on a loaded 2-core box), but a fork of a process
    whose torch has started its thread pools can hang in the child, so once torch is loaded
    (a model scorer, the test suite) the workers are spawned."""
    if sys.platform.startswith("linux") and "torch" not in sys.modules:
        return "fork"
    return "spawn"


@contextlib.contextmanager
def _stderr_to(path: Path):
    """datatrove logs every task's pipeline and stats to stderr (fd 2, which spawned workers
    inherit); they go to a file instead, so a step prints its own one-line summary."""
    if os.environ.get("TINYLM_DATATROVE_LOGS"):  # to watch datatrove at work
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return str(err) or type(err).__name__


def check_step_output(source: str | Path, out: str | Path, force: bool) -> Path:
    """Before any work: the output is a new folder (or, with --force, a dataset of ours), and
    never the input itself, which a step reads and must leave as it was reviewed."""
    from tinylm.data.curate.dataset import check_dataset_output

    out = Path(out)
    if out.resolve() == Path(source).resolve():
        raise TinyLMError(f"--out {out} is the input dataset; a step writes a new folder")
    check_dataset_output(out, force)
    return out


def finish(writer: DatasetWriter, source: Dataset, entry: dict):
    """Carry the source's card and sources over, append `entry` to the history, close."""
    writer.info["card"] = dict(source.info.get("card", {}))
    writer.info["sources"] = list(source.info.get("sources", []))
    writer.info["history"] = [*source.info.get("history", []),
                              {**entry, "at": now_utc(), "input": source.name,
                               "input_manifest_sha256": source.manifest_sha256}]
    return writer.close()


# ---------------------------------------------------------------------- datatrove blocks

def _pipeline_step_base():
    try:
        from datatrove.pipeline.base import PipelineStep
    except ImportError:
        return object
    return PipelineStep


class DatasetPartsReader(_pipeline_step_base()):
    """Reads our parts as datatrove Documents (the row rides in metadata["row"])."""

    name = "tinylm dataset parts"
    type = "Reader"

    def __init__(self, parts: list[str]):
        super().__init__()
        self.parts = parts

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from datatrove.data import Document

        for index in range(rank, len(self.parts), world_size):
            for row in iter_part(Path(self.parts[index])):
                self.stat_update("rows_in")
                yield Document(text=row["text"], id=row["id"],
                               metadata={"row": row, "part": index})


class RowStepBlock(_pipeline_step_base()):
    """A `RowStep` as a datatrove block: documents whose step returns None are dropped."""

    type = "Curate"

    def __init__(self, step: RowStep):
        super().__init__()
        self.step = step
        self.name = f"tinylm {step.name}"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            with self.track_time():
                row = self.step(doc.metadata["row"])
            if row is None:
                self.stat_update("dropped")
                continue
            self.stat_update("kept")
            doc.metadata["row"], doc.text = row, row["text"]
            yield doc


class DatasetPartsWriter(_pipeline_step_base()):
    """Writes each document's row to part-<its input part>.jsonl in `out_dir`. A task takes
    whole parts, so no two tasks ever write the same file."""

    name = "tinylm dataset parts"
    type = "Writer"

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = out_dir

    def run(self, data, rank: int = 0, world_size: int = 1):
        current, handle = None, None
        try:
            for doc in data:
                part = doc.metadata["part"]
                if part != current:
                    if handle:
                        handle.close()
                    current = part
                    handle = open(Path(self.out_dir) / part_name(part), "a",  # noqa: SIM115
                                  encoding="utf-8")
                handle.write(row_line(doc.metadata["row"]))
                self.stat_update("rows_out")
        finally:
            if handle:
                handle.close()
        return
        yield  # a generator, as datatrove expects of a block


# ---------------------------------------------------------------------------- tokenizing

def tokenize_parts(dataset: Dataset, tokenizer, out_dir: Path, val_permille: int = 50,
                   workers: int = 1, engine: str = "auto") -> dict:
    """Token shards of every part: out_dir/part-XXXXX.{train,val}.bin (+ .json counts), EOS
    after each document, the split by `sources.in_validation` as `pack.py` does. `tokenizer`
    is a tokenizer.json path (needed by datatrove workers) or, in-process, a Tokenizer."""
    from tinylm.tokenizers import load_tokenizer

    engine = pick_engine(engine, workers)
    path = tokenizer if isinstance(tokenizer, (str, Path)) else None
    if path is not None:
        tokenizer = load_tokenizer(path)  # refused here, before any worker starts
    elif engine == "datatrove":
        raise TinyLMError("datatrove workers load the tokenizer from a file: give its path")
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [str(p) for p in dataset.parts]
    if engine == "inprocess":
        for index, part in enumerate(parts):
            write_shard(out_dir, index, (row["text"] for row in iter_part(Path(part))),
                        tokenizer, val_permille)
    else:
        _run_datatrove([DatasetPartsReader(parts),
                        ShardWriterBlock(str(path), str(out_dir), val_permille)],
                       len(parts), workers, out_dir)
    totals = {"train": 0, "val": 0, "documents_train": 0, "documents_val": 0}
    for index in range(len(parts)):
        counts_file = out_dir / f"part-{index:05d}.json"
        if not counts_file.exists():  # a part with no rows (datatrove never saw it)
            continue
        counts = json.loads(counts_file.read_text())
        for key in totals:
            totals[key] += counts[key]
    return {**totals, "parts": len(parts), "engine": engine, "workers": workers,
            "dtype": shard_dtype(tokenizer).__name__}


def shard_dtype(tokenizer):
    import numpy as np

    return np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32


SHARD_BATCH = 512  # documents per tokenizer call (it parallelises inside a batch)


def write_shard(out_dir: Path, index: int, texts, tokenizer, val_permille: int) -> None:
    """Part `index`'s documents as token ids with EOS after each, to its train or val shard."""
    from itertools import chain

    import numpy as np

    from tinylm.data.sources import in_validation

    dtype = shard_dtype(tokenizer)
    counts = {"train": 0, "val": 0, "documents_train": 0, "documents_val": 0}
    stem = Path(out_dir) / f"part-{index:05d}"
    with open(f"{stem}.train.bin", "wb") as train, open(f"{stem}.val.bin", "wb") as val:
        batch: list[str] = []
        for text in chain(texts, [None]):  # None flushes the last batch
            if text is not None:
                batch.append(text)
            if batch and (text is None or len(batch) == SHARD_BATCH):
                for doc, ids in zip(batch, tokenizer.encode_batch(batch)):
                    split = "val" if in_validation(doc, val_permille) else "train"
                    flat = np.array([*ids, tokenizer.eos_id], dtype=dtype)
                    (val if split == "val" else train).write(flat.tobytes())
                    counts[split] += len(flat)
                    counts[f"documents_{split}"] += 1
                batch = []
    Path(f"{stem}.json").write_text(json.dumps(counts))


class ShardWriterBlock(_pipeline_step_base()):
    """`write_shard` as a datatrove block: a task's documents arrive part by part."""

    name = "tinylm token shards"
    type = "Tokenizer"

    def __init__(self, tokenizer_path: str, out_dir: str, val_permille: int):
        super().__init__()
        self.tokenizer_path, self.out_dir, self.val_permille = (tokenizer_path, out_dir,
                                                                val_permille)

    def run(self, data, rank: int = 0, world_size: int = 1):
        from itertools import groupby

        from tinylm.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(self.tokenizer_path)
        for part, docs in groupby(data, key=lambda doc: doc.metadata["part"]):
            write_shard(Path(self.out_dir), part, (doc.text for doc in docs), tokenizer,
                        self.val_permille)
            self.stat_update("parts")
        return
        yield  # a generator, as datatrove expects of a block
