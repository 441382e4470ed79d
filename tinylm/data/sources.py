"""Named data sets, resolved from a data dir, read as a stream of documents.

The data dir is, in order: `--data-dir`, `$TINYLM_DATA`, then `../shared/data` beside the
current folder or beside this checkout. A name maps to files inside it plus a reader that yields
one document (str) at a time, so corpora of any size stream through. `hf:NAME[:CONFIG]` reads a
Hugging Face data set by name when the `datasets` package is installed and a hub is reachable,
and a path to a local .txt/.jsonl/.txt.gz file reads the user's own text.

Train/validation split: a document goes to validation when the sha256 of its text falls in the
first `val_permille` of the hash space. Identical documents therefore always land on the same
side, so the two splits never share a document, whatever the order of the source.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tinylm.errors import TinyLMError
from tinylm.io import sha256_file

TINYSTORIES_SEPARATOR = "<|endoftext|>"


# --------------------------------------------------------------------------- data dir

def candidate_data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    if data_dir:
        return [Path(data_dir)]
    found = []
    if os.environ.get("TINYLM_DATA"):
        found.append(Path(os.environ["TINYLM_DATA"]))
    found.append(Path.cwd().parent / "shared" / "data")
    found.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    return found


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    candidates = candidate_data_dirs(data_dir)
    for folder in candidates:
        if folder.is_dir():
            return folder.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise TinyLMError(f"no data dir found (looked in: {looked}); pass --data-dir or set "
                      f"$TINYLM_DATA")


# --------------------------------------------------------------------------- readers

def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def read_separated(path: Path, separator: str = TINYSTORIES_SEPARATOR,
                   drop_last_partial: bool = True) -> Iterator[str]:
    """Documents separated by a marker line; streams the file in 1 MiB pieces."""
    buffer = ""
    with _open_text(path) as f:
        while piece := f.read(1 << 20):
            buffer += piece
            *whole, buffer = buffer.split(separator)
            for doc in whole:
                if doc.strip():
                    yield doc.strip("\n")
    if buffer.strip() and not drop_last_partial:
        yield buffer.strip("\n")


def read_blank_line_docs(path: Path) -> Iterator[str]:
    """Documents separated by one or more blank lines."""
    with _open_text(path) as f:
        doc: list[str] = []
        for line in f:
            if line.strip():
                doc.append(line)
            elif doc:
                yield "".join(doc).rstrip("\n")
                doc = []
        if doc:
            yield "".join(doc).rstrip("\n")


def read_jsonl_text(path: Path, field: str = "text") -> Iterator[str]:
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)[field]
                except (ValueError, KeyError) as err:
                    raise TinyLMError(f"{path}:{n}: not a JSON line with a {field!r} field "
                                      f"({err})") from None


def read_csv_text(path: Path, field: str = "text") -> Iterator[str]:
    csv.field_size_limit(sys.maxsize)
    with _open_text(path) as f:
        for row in csv.DictReader(f):
            if row.get(field):
                yield row[field]


_WIKI_TITLE = re.compile(r"^ = [^=].* = \n$")


def read_wikitext_articles(path: Path) -> Iterator[str]:
    """WikiText raw files: an article starts at a top-level ` = Title = ` line."""
    with _open_text(path) as f:
        article: list[str] = []
        for line in f:
            if _WIKI_TITLE.match(line) and any(l.strip() for l in article):
                yield "".join(article)
                article = []
            article.append(line)
        if any(l.strip() for l in article):
            yield "".join(article)


def read_line_chunks(path: Path, lines_per_doc: int = 100) -> Iterator[str]:
    """For line-per-utterance corpora without document marks (BabyLM Switchboard)."""
    with _open_text(path) as f:
        chunk: list[str] = []
        for line in f:
            chunk.append(line)
            if len(chunk) == lines_per_doc:
                yield "".join(chunk).rstrip("\n")
                chunk = []
        if chunk:
            yield "".join(chunk).rstrip("\n")


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Source:
    description: str
    files: tuple[str, ...]                 # relative to the data dir
    reader: Callable[[Path], Iterator[str]]


SOURCES: dict[str, Source] = {
    "tinystories": Source(
        "TinyStories V1 train, first 2 MiB, original case (2,316 whole stories)",
        ("tinystories/TinyStories-train-v1-raw-first2MiB.txt.gz",), read_separated),
    "tinystories-valid": Source(
        "TinyStories V1 validation prefix (stories separated by blank lines)",
        ("tinystories/TinyStories-valid-prefix.txt",), read_blank_line_docs),
    "fineweb-edu": Source(
        "FineWeb-Edu sample-10BT, 150 documents",
        ("fineweb-edu/fineweb-edu-sample10BT-150docs-annotated.csv",), read_csv_text),
    "c4": Source("C4 English web sample, 1,000 documents",
                 ("c4-sample/c4-sample.00000-of-00001.json.gz",), read_jsonl_text),
    "wikitext-2": Source("WikiText-2 raw validation split, by article (the test split is "
                         "kept for evaluation)", ("wikitext-2/wiki.valid.raw",),
                         read_wikitext_articles),
    "switchboard": Source("BabyLM strict-small Switchboard (100-line chunks)",
                          ("babylm/train_10M/switchboard.train.gz",), read_line_chunks),
}


def dataset_names() -> list[str]:
    return sorted(SOURCES)


@dataclass
class ResolvedDataset:
    name: str
    files: list[Path]
    reader: Callable[[Path], Iterator[str]] | None
    hf_name: str | None = None

    def documents(self) -> Iterator[str]:
        if self.hf_name is not None:
            yield from _hf_documents(self.hf_name)
            return
        for path in self.files:
            try:
                yield from self.reader(path)
            except UnicodeDecodeError as err:
                raise TinyLMError(f"{path}: not valid UTF-8 text ({err})") from None
            except (OSError, EOFError) as err:
                raise TinyLMError(f"{path}: cannot read ({err})") from None

    def fingerprint(self) -> dict[str, str]:
        """sha256 of every source file: a changed source invalidates its token cache."""
        if self.hf_name is not None:
            return {self.hf_name: "hub"}
        return {str(p.name): sha256_file(p) for p in self.files}


def resolve_dataset(name: str, data_dir: str | Path | None = None) -> ResolvedDataset:
    if name.startswith("hf:"):
        return ResolvedDataset(name, [], None, hf_name=name[3:])
    as_path = Path(name)
    if as_path.suffix in (".txt", ".jsonl", ".gz") and as_path.exists():
        reader = read_jsonl_text if ".jsonl" in as_path.name else read_separated_or_blank
        return ResolvedDataset(as_path.name, [as_path.resolve()], reader)
    if name not in SOURCES:
        raise TinyLMError(f"unknown data set {name!r}; known: {', '.join(dataset_names())} "
                          f"(or hf:NAME, or a path to a .txt/.jsonl file)")
    folder = resolve_data_dir(data_dir)
    source = SOURCES[name]
    files = [folder / rel for rel in source.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise TinyLMError(f"data set {name!r}: file(s) not found: {', '.join(missing)} "
                          f"(data dir {folder})")
    return ResolvedDataset(name, files, source.reader)


def read_separated_or_blank(path: Path) -> Iterator[str]:
    """A user's .txt: split on <|endoftext|> when the file uses it, else on blank lines."""
    with _open_text(path) as f:
        uses_marker = TINYSTORIES_SEPARATOR in f.read(1 << 20)
    yield from (read_separated(path, drop_last_partial=False) if uses_marker
                else read_blank_line_docs(path))


def _hf_documents(spec: str) -> Iterator[str]:  # pragma: no cover - needs a hub
    try:
        import datasets
    except ImportError:
        raise TinyLMError("hf: data sets need the `datasets` package (pip install "
                          "'tinylm[hub]')") from None
    name, _, config = spec.partition(":")
    stream = datasets.load_dataset(name, config or None, split="train", streaming=True)
    for row in stream:
        yield row["text"]


def in_validation(doc: str, val_permille: int) -> bool:
    bucket = int.from_bytes(hashlib.sha256(doc.encode("utf-8")).digest()[:4], "big") % 1000
    return bucket < val_permille
