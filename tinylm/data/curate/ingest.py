"""`tinylm data ingest`: text, JSONL, CSV or Parquet (or a named corpus) into a dataset folder.

Every row keeps where it came from: the claimed source name, the file, the line (text, JSONL)
or row (CSV, Parquet) it was read at, 1-based, and the sha256 of the text as read; the record's
other columns go to `meta` (FineWeb-Edu's annotated CSV carries `score`, `reasoning`,
`decision`). dataset.json lists every input file with its sha256, so the dataset says exactly
which bytes it was made from.

Readers stream: text and JSONL line by line (gzip transparently), CSV by the stdlib reader,
Parquet one row group at a time (pyarrow), hub data sets through `datasets` streaming. Nothing
is held beyond one document and one row group.

Text files are cut into documents by `--split`: `lines` (one per line), `blank` (blank-line
separated), `eot` (`<|endoftext|>` separated, TinyStories' convention), or `auto` (eot if the
first MiB holds the marker, else blank if it holds a blank line, else lines). A document's
`line` is the line it starts on.
"""

from __future__ import annotations

import csv
import getpass
import gzip
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tinylm.data.curate.dataset import ROWS_PER_PART, DatasetWriter, make_row
from tinylm.data.sources import TINYSTORIES_SEPARATOR, check_hub, resolve_dataset
from tinylm.errors import TinyLMError
from tinylm.io import sha256_file

SPLITS = ("auto", "lines", "blank", "eot")
# The named corpora ingest knows, and how their files are read (see sources.SOURCES).
NAMED = {"c4": ("jsonl", "auto"), "fineweb-edu": ("csv", "auto"),
         "tinystories": ("text", "eot")}
# (line, text, meta) for each document of a file
Records = Iterator[tuple[int, str, dict]]


@dataclass
class IngestConfig:
    """What `tinylm data ingest` was asked to do."""
    inputs: list[str]
    out: str
    source: str | None = None        # the claimed source name; default: the input's name
    name: str | None = None          # the dataset's name; default: the output folder's name
    author: str | None = None        # default: $TINYLM_USER, else the login name
    text_field: str = "text"
    split: str = "auto"
    license: str = "unknown"
    description: str = ""
    data_dir: str | None = None
    rows_per_part: int = ROWS_PER_PART
    force: bool = False
    card: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.inputs:
            raise TinyLMError("ingest needs at least one input (a file, a named corpus, or "
                              "hf:NAME)")
        if self.split not in SPLITS:
            raise TinyLMError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.rows_per_part < 1:
            raise TinyLMError(f"--rows-per-part must be >= 1, got {self.rows_per_part}")
        if self.source is not None and not self.source.strip():
            raise TinyLMError("--source must name the claimed source, got an empty name")


def default_author() -> str:
    return os.environ.get("TINYLM_USER") or getpass.getuser()


# --------------------------------------------------------------------------------- readers

def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def file_format(path: Path) -> str:
    """text | jsonl | csv | parquet, from the name (a .gz suffix is looked through)."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".txt") or "." not in name:
        return "text"
    raise TinyLMError(f"{path}: unknown file type (ingest reads .txt, .jsonl, .json, .csv, "
                      f".parquet, each optionally .gz)")


def read_text(path: Path, split: str = "auto", drop_last_partial: bool = False) -> Records:
    if split == "auto":
        split = _sniff_split(path)
    with _open_text(path) as f:
        if split == "lines":
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield n, line.rstrip("\r\n"), {}
            return
        doc: list[str] = []
        start = 1
        for n, line in enumerate(f, 1):
            if not doc or not "".join(doc).strip():
                doc, start = [], n  # a document starts at its first line with text
            if split == "eot" and TINYSTORIES_SEPARATOR in line:
                *ends, rest = line.split(TINYSTORIES_SEPARATOR)
                for piece in ends:
                    doc.append(piece)
                    if "".join(doc).strip():
                        yield start, "".join(doc).strip("\n"), {}
                    doc, start = [], n
                doc = [rest] if rest.strip() else []
            elif split == "blank" and not line.strip():
                if doc:
                    yield start, "".join(doc).rstrip("\n"), {}
                doc = []
            else:
                doc.append(line)
        if doc and "".join(doc).strip() and not drop_last_partial:
            yield start, "".join(doc).strip("\n"), {}


def _sniff_split(path: Path) -> str:
    with _open_text(path) as f:
        head = f.read(1 << 20)
    if TINYSTORIES_SEPARATOR in head:
        return "eot"
    if "\n\n" in head.replace("\r\n", "\n").strip("\n"):
        return "blank"
    return "lines"


def read_jsonl(path: Path, text_field: str = "text") -> Records:
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise TinyLMError(f"{path}:{n}: not a JSON line") from None
            yield n, _text_of(record, text_field, f"{path}:{n}"), _meta_of(record, text_field)


def read_csv(path: Path, text_field: str = "text") -> Records:
    csv.field_size_limit(sys.maxsize)
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        if text_field not in (reader.fieldnames or []):
            raise TinyLMError(f"{path}: no {text_field!r} column (columns: "
                              f"{', '.join(reader.fieldnames or [])}); pass --text-field")
        for n, record in enumerate(reader, 1):
            if record.get(text_field):
                yield n, record[text_field], {k: v for k, v in record.items()
                                              if k != text_field and k is not None}


def read_parquet(path: Path, text_field: str = "text") -> Records:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TinyLMError("reading Parquet needs pyarrow (pip install 'tinylm[curate]')") \
            from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises its own types for a bad file
        raise TinyLMError(f"{path}: not a readable Parquet file ({err})") from None
    if text_field not in parquet.schema_arrow.names:
        raise TinyLMError(f"{path}: no {text_field!r} column (columns: "
                          f"{', '.join(parquet.schema_arrow.names)}); pass --text-field")
    n = 0
    for group in range(parquet.num_row_groups):  # one row group in memory at a time
        for record in parquet.read_row_group(group).to_pylist():
            n += 1
            yield n, _text_of(record, text_field, f"{path}: row {n}"), \
                _meta_of(record, text_field)


def _text_of(record, text_field: str, where: str) -> str:
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        raise TinyLMError(f"{where}: no string {text_field!r} field; pass --text-field")
    return record[text_field]


def _meta_of(record: dict, text_field: str) -> dict:
    """The record's other columns, made JSON-safe (Parquet dates and bytes become strings)."""
    return json.loads(json.dumps({k: v for k, v in record.items() if k != text_field},
                                 default=str))


def read_file(path: Path, text_field: str, split: str, drop_last_partial=False) -> Records:
    kind = file_format(path)
    try:
        if kind == "text":
            yield from read_text(path, split, drop_last_partial)
        elif kind == "jsonl":
            yield from read_jsonl(path, text_field)
        elif kind == "csv":
            yield from read_csv(path, text_field)
        else:
            yield from read_parquet(path, text_field)
    except UnicodeDecodeError as err:
        raise TinyLMError(f"{path}: not valid UTF-8 text ({err})") from None
    except (EOFError, gzip.BadGzipFile) as err:
        raise TinyLMError(f"{path}: cannot read ({err})") from None


def read_hub(name: str, text_field: str) -> Records:  # pragma: no cover - needs a hub
    import datasets

    spec, _, config = name.removeprefix("hf:").partition(":")
    stream = datasets.load_dataset(spec, config or None, split="train", streaming=True)
    for n, record in enumerate(stream, 1):
        yield n, _text_of(record, text_field, f"{name}: row {n}"), _meta_of(record, text_field)


# --------------------------------------------------------------------------------- inputs

@dataclass
class Input:
    """One thing to read: a file (with how to read it) or a hub data set."""
    label: str                 # what the user named: a path, `c4`, `hf:...`
    path: Path | None
    split: str
    drop_last_partial: bool = False

    def records(self, text_field: str) -> Records:
        if self.path is None:
            return read_hub(self.label, text_field)
        return read_file(self.path, text_field, self.split, self.drop_last_partial)

    def describe(self) -> dict:
        if self.path is None:
            return {"input": self.label, "file": None, "sha256": None, "format": "hub"}
        return {"input": self.label, "file": str(self.path), "format": file_format(self.path),
                "sha256": sha256_file(self.path, remember=True)}


def resolve_inputs(config: IngestConfig) -> list[Input]:
    """Every input checked (exists, readable type) before anything is written."""
    found = []
    for label in config.inputs:
        if label.startswith("hf:"):
            check_hub(label)  # one line when the hub cannot be used
            found.append(Input(label, None, config.split))
        elif label in NAMED and not Path(label).exists():
            _, split = NAMED[label]
            for path in resolve_dataset(label, config.data_dir).files:
                # the TinyStories sample is a 2 MiB cut: its last story is partial
                found.append(Input(label, path, split if config.split == "auto"
                                   else config.split, drop_last_partial=label == "tinystories"))
        else:
            path = Path(label)
            if not path.exists():
                raise TinyLMError(f"input not found: {label} (a file, one of "
                                  f"{', '.join(sorted(NAMED))}, or hf:NAME)")
            if not path.is_file():
                raise TinyLMError(f"input {label} is a folder; give files")
            file_format(path)
            found.append(Input(label, path, config.split))
    return found


# --------------------------------------------------------------------------------- ingest

def ingest(config: IngestConfig, log=print):
    """Read every input into a new dataset folder at `config.out`; returns the Dataset."""
    inputs = resolve_inputs(config)
    out = Path(config.out)
    author = config.author or default_author()
    source = config.source
    sources = [inp.describe() for inp in inputs]
    card = {"claimed_source": source or ", ".join(dict.fromkeys(i.label for i in inputs)),
            "license": config.license, "description": config.description, **config.card}
    writer = DatasetWriter(out, name=config.name or out.name, author=author, card=card,
                           rows_per_part=config.rows_per_part, force=config.force)
    try:
        for inp, described in zip(inputs, sources):
            name = source or Path(inp.label).name
            rows = 0
            for line, text, meta in inp.records(config.text_field):
                writer.write(make_row(text, name, str(described["file"] or inp.label), line,
                                      meta))
                rows += 1
            described["rows"] = rows
            log(f"  {inp.label}: {rows} rows")
        if writer.rows == 0:
            raise TinyLMError(f"no documents in {', '.join(config.inputs)}; nothing ingested")
        writer.info["sources"] = sources
        writer.info["history"].append({"step": "ingest", "at": writer.info["created"],
                                       "inputs": config.inputs, "rows": writer.rows,
                                       "split": config.split, "text_field": config.text_field})
    except BaseException:
        writer.abort()
        raise
    return writer.close()


__all__ = ["IngestConfig", "default_author", "ingest", "read_file", "resolve_inputs"]
