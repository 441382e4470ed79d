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
    return resolve_data_dir_why(data_dir)[0]


def resolve_data_dir_why(data_dir: str | Path | None = None) -> tuple[Path, str]:
    """(the data dir, why that one). A --data-dir or $TINYLM_DATA that is not a folder is an
    error, never passed over for a default."""
    if data_dir:
        if not Path(data_dir).is_dir():
            raise TinyLMError(f"--data-dir {data_dir} is not a folder")
        return Path(data_dir).resolve(), "from --data-dir"
    env = os.environ.get("TINYLM_DATA")
    if env:
        if not Path(env).is_dir():
            raise TinyLMError(f"$TINYLM_DATA={env} is not a folder; fix it or unset it")
        return Path(env).resolve(), "from $TINYLM_DATA"
    candidates = candidate_data_dirs()
    for folder, why in zip(candidates, ("beside the working folder (../shared/data)",
                                        "beside this tinylm checkout (../shared/data)")):
        if folder.is_dir():
            return folder.resolve(), why
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


def read_line_chunks(path: Path, lines_per_doc: int = 100,
                     skip_blank: bool = False) -> Iterator[str]:
    """For line-per-utterance corpora without document marks (BabyLM Switchboard)."""
    with _open_text(path) as f:
        chunk: list[str] = []
        for line in f:
            if skip_blank and not line.strip():
                continue
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
    "fineweb-edu-stream": Source(
        "FineWeb-Edu sample-10BT, first 1M characters as one stream (document boundaries are "
        "lost: cut into 20-line pieces)",
        ("fineweb-edu/fineweb-edu-sample10BT-stream-first1Mchars.txt.gz",),
        lambda path: read_line_chunks(path, 20)),
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
    split_note: str | None = None  # how a user's file without document marks was split
    curated: Path | None = None    # a `tinylm data` dataset folder (data/curate/dataset.py)

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
        check_hub(name)
        return ResolvedDataset(name, [], None, hf_name=name[3:])
    as_path = Path(name)
    if as_path.is_dir() and (as_path / "dataset.json").is_file():
        return curated_dataset(as_path)
    if as_path.suffix in (".txt", ".jsonl", ".gz") and as_path.exists():
        if not as_path.is_file():
            raise TinyLMError(f"--data {as_path} is a folder; give a text file")
        if ".jsonl" in as_path.name:
            return ResolvedDataset(as_path.name, [as_path.resolve()], read_jsonl_text)
        reader, note = text_reader(as_path)
        return ResolvedDataset(as_path.name, [as_path.resolve()], reader, split_note=note)
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


def curated_dataset(path: Path) -> ResolvedDataset:
    """A dataset folder of `tinylm data ingest/filter/rank`: its rows' texts, in row order
    (a ranked dataset's order is its curriculum). Named by its manifest hash, so the token
    cache of one version is never taken for another's."""
    from tinylm.data.curate.dataset import iter_part, open_dataset

    dataset = open_dataset(path, verify=False)  # hashed by `fingerprint` for the cache
    return ResolvedDataset(f"{dataset.name}-{dataset.manifest_sha256[:12]}", dataset.parts,
                           lambda part: (row["text"] for row in iter_part(part)),
                           curated=path.resolve())


# A file without document marks is cut into about LINE_DOCS documents: by lines when it has at
# least MIN_LINES of them, else into chunks of at least CHUNK_CHARS characters. Enough pieces
# that a 5% validation split gets some, few enough that each is still a stretch of text.
LINE_DOCS, MIN_LINES, CHUNK_CHARS = 200, 40, 256


def text_reader(path: Path) -> tuple[Callable[[Path], Iterator[str]], str | None]:
    """How a user's .txt is cut into documents: by <|endoftext|>, else by blank lines; a file
    with neither (one document, which would leave a split empty) by lines, and a file of few
    lines by fixed-size chunks. Returns (reader, a note saying so, or None)."""
    try:
        with _open_text(path) as f:
            head = f.read(1 << 20)
    except UnicodeDecodeError as err:
        raise TinyLMError(f"{path}: not valid UTF-8 text ({err})") from None
    except (OSError, EOFError) as err:
        raise TinyLMError(f"{path}: cannot read ({err})") from None
    if TINYSTORIES_SEPARATOR in head:
        return read_separated_or_blank, None
    if re.search(r"\n[ \t\r]*\n\s*\S", head.strip("\n")):
        return read_blank_line_docs, None
    lines = sum(1 for line in head.splitlines() if line.strip())
    if lines >= MIN_LINES:
        per_doc = max(1, lines // LINE_DOCS)
        note = (f"{path.name} has no document separators (no blank lines): split into "
                f"documents of {per_doc} line(s) each")
        return (lambda p: read_line_chunks(p, per_doc, skip_blank=True)), note
    size = max(CHUNK_CHARS, len(head) // LINE_DOCS)
    note = (f"{path.name} has no document separators and few lines: split into chunks of "
            f"{size} characters")
    return (lambda p: read_char_chunks(p, size)), note


def read_char_chunks(path: Path, size: int) -> Iterator[str]:
    with _open_text(path) as f:
        while piece := f.read(size):
            if piece.strip():
                yield piece


def read_separated_or_blank(path: Path) -> Iterator[str]:
    """A user's .txt: split on <|endoftext|> when the file uses it, else on blank lines."""
    with _open_text(path) as f:
        uses_marker = TINYSTORIES_SEPARATOR in f.read(1 << 20)
    yield from (read_separated(path, drop_last_partial=False) if uses_marker
                else read_blank_line_docs(path))


HUB = ("huggingface.co", 443)


def check_hub(name: str, timeout: float = 3.0) -> None:
    """An hf: name fails in seconds when the hub cannot be used, not after a long hang."""
    import importlib.util
    import socket
    import threading

    if importlib.util.find_spec("datasets") is None:
        raise TinyLMError(f"{name}: hf: data sets need the `datasets` package (pip install "
                          f"'tinylm[hub]')")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes", "on"):
            raise TinyLMError(f"{name}: ${var} is set, so the Hugging Face hub cannot be "
                              f"reached; use a local file or a named data set")
    failure: list[str] = ["no answer in time"]

    def probe() -> None:  # in a thread: a name lookup that hangs ignores socket timeouts
        try:
            socket.create_connection(HUB, timeout=timeout).close()
            failure.clear()
        except OSError as err:
            failure[:] = [str(err.strerror or err)]

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if failure:
        raise TinyLMError(f"{name}: the Hugging Face hub ({HUB[0]}) is not reachable "
                          f"({failure[0]}); use a local file or a named data set")


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
