"""The curated dataset folder: rows that keep their provenance, and a manifest of file hashes.

Every `tinylm data` step (ingest, filter, dedup, decontaminate, rank) reads one dataset folder
and writes a new one; none edits a dataset in place, so a review bound to a manifest hash stays
true of exactly the bytes it saw. The layout:

    DATASET/
      dataset.json        {"format": "tinylm-dataset", "version": 1, "name", "author",
                           "created", "card": {...what the dataset claims to be...},
                           "sources": [...], "history": [...steps that made it...]}
      rows/part-00000.jsonl   one JSON object per line (ROW_FIELDS below), at most
                              `rows_per_part` rows per part, so workers can take parts
      manifest.json       {"format": "tinylm-dataset-manifest", "files": {relpath: sha256},
                           "sha256": hash of that mapping}
      checks/NAME.json    results about these bytes (audit, contamination, ...), each holding
                          the manifest sha256 it was computed on; stale once the data changes
      reviews/NAME.json   sign-offs, bound to a manifest sha256 the same way

A row: {"id", "text", "source", "file", "line", "sha256", "meta"}: `source` is the name the
ingest was given (what the row *claims* to be), `file` and `line` where it was read (line or
row number, 1-based), `sha256` the hash of the original text as read (before any step changed
it), `meta` the other columns of the original record (e.g. FineWeb-Edu's `int_score`).

Reading streams part by part and row by row: nothing here holds a corpus in memory.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.io import canonical_sha256, sha256_file, write_text_atomic

FORMAT = "tinylm-dataset"
MANIFEST_FORMAT = "tinylm-dataset-manifest"
VERSION = 1
ROW_FIELDS = ("id", "text", "source", "file", "line", "sha256", "meta")
ROWS_PER_PART = 50_000
# Files outside the manifest: results about the data, not the data.
UNHASHED = ("manifest.json", "checks", "reviews")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def make_row(text: str, source: str, file: str, line: int, meta: dict | None = None,
             original_sha256: str | None = None) -> dict:
    """A row for `text`, read from `file` at `line`, claimed to be from `source`."""
    return {"id": f"{source}/{Path(file).name}:{line}", "text": text, "source": source,
            "file": file, "line": line, "sha256": original_sha256 or text_sha256(text),
            "meta": meta or {}}


def row_line(row: dict) -> str:
    """A row as it is stored: one JSON line (every writer uses this, so bytes match)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def check_row(row, where: str) -> dict:
    if not isinstance(row, dict) or not isinstance(row.get("text"), str) \
            or not isinstance(row.get("id"), str):
        raise TinyLMError(f"{where}: not a dataset row (needs string id and text)")
    return row


def is_dataset(path: Path) -> bool:
    try:
        info = json.loads((Path(path) / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == FORMAT


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------- reading

class Dataset:
    """A dataset folder opened for reading. `manifest_sha256` is read from manifest.json;
    `verify()` recomputes every file's hash and refuses a dataset whose bytes changed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise TinyLMError(f"dataset not found: {self.path}")
        if not is_dataset(self.path):
            raise TinyLMError(f"{self.path} is not a tinylm dataset folder (no dataset.json "
                              f"with format {FORMAT!r}; make one with `tinylm data ingest`)")
        self.info = json.loads((self.path / "dataset.json").read_text(encoding="utf-8"))
        if self.info.get("version") != VERSION:
            raise TinyLMError(f"{self.path}: dataset format version {self.info.get('version')}"
                              f" is not {VERSION}")
        try:
            self.manifest = json.loads((self.path / "manifest.json").read_text("utf-8"))
        except (OSError, ValueError):
            raise TinyLMError(f"{self.path}: manifest.json is missing or damaged") from None
        if not isinstance(self.manifest, dict) or \
                self.manifest.get("format") != MANIFEST_FORMAT:
            raise TinyLMError(f"{self.path}: manifest.json is not a tinylm manifest")

    @property
    def name(self) -> str:
        return str(self.info.get("name", self.path.name))

    @property
    def author(self) -> str | None:
        return self.info.get("author")

    @property
    def manifest_sha256(self) -> str:
        return self.manifest["sha256"]

    @property
    def parts(self) -> list[Path]:
        return sorted((self.path / "rows").glob("part-*.jsonl"))

    def verify(self) -> str:
        """The manifest hash, after checking that the files on disk are exactly the manifest's
        (no file changed, added or removed). Raises with the first difference."""
        problem = manifest_difference(self.path, self.manifest)
        if problem:
            raise TinyLMError(f"{self.path}: the data changed since its manifest was written "
                              f"({problem})")
        return self.manifest_sha256

    def iter_rows(self, parts: Iterable[Path] | None = None) -> Iterator[dict]:
        for part in (self.parts if parts is None else parts):
            yield from iter_part(part)

    def row_count(self) -> int:
        return int(self.info.get("rows", sum(1 for _ in self.iter_rows())))


def iter_part(part: Path) -> Iterator[dict]:
    with open(part, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except ValueError:
                raise TinyLMError(f"{part}:{n}: not a JSON row") from None
            yield check_row(row, f"{part}:{n}")


def open_dataset(path: str | Path, verify: bool = True) -> Dataset:
    dataset = Dataset(path)
    if verify:
        dataset.verify()
    return dataset


# --------------------------------------------------------------------------------- manifest

def hashed_files(folder: Path) -> list[str]:
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and rel.parts[0] not in UNHASHED and not rel.name.startswith("."):
            out.append(rel.as_posix())
    return out


def build_manifest(folder: Path) -> dict:
    files = {rel: sha256_file(folder / rel) for rel in hashed_files(folder)}
    return {"format": MANIFEST_FORMAT, "files": files, "sha256": canonical_sha256(files)}


def manifest_difference(folder: Path, manifest: dict) -> str | None:
    want = manifest.get("files", {})
    have = hashed_files(folder)
    for rel in have:
        if rel not in want:
            return f"{rel} was added"
    for rel, sha in want.items():
        if not (folder / rel).is_file():
            return f"{rel} was removed"
        if sha256_file(folder / rel) != sha:
            return f"{rel} was modified"
    if canonical_sha256(want) != manifest.get("sha256"):
        return "manifest.json's own hash does not match its file list"
    return None


# ---------------------------------------------------------------------------------- writing

class DatasetWriter:
    """Writes a new dataset folder: rows go to parts in a hidden sibling folder, and the whole
    folder is renamed into place on `close()`, so a killed step leaves no half dataset.

        with DatasetWriter(out, name="c4-clean", author="ana", card={...}) as w:
            for row in rows: w.write(row)
    """

    def __init__(self, path: str | Path, name: str, author: str | None = None,
                 card: dict | None = None, sources: list | None = None,
                 history: list | None = None, rows_per_part: int = ROWS_PER_PART,
                 force: bool = False):
        self.path = Path(path)
        check_dataset_output(self.path, force)
        self.info = {"format": FORMAT, "version": VERSION, "name": name, "author": author,
                     "created": now_utc(), "card": card or {}, "sources": sources or [],
                     "history": history or []}
        self.rows_per_part = rows_per_part
        self.rows = 0
        self._temp = self.path.parent / f".{self.path.name}.{os.getpid()}.tmp"
        if self._temp.exists():
            shutil.rmtree(self._temp)
        (self._temp / "rows").mkdir(parents=True)
        self._part = None
        self._force = force

    @property
    def rows_dir(self) -> Path:
        """Where the parts go: for steps whose workers write whole parts themselves
        (`engine.py`), which then call `add_part_rows` with what each part holds."""
        return self._temp / "rows"

    def add_part_rows(self, count: int) -> None:
        self.rows += count

    def write(self, row: dict) -> None:
        if self.rows % self.rows_per_part == 0:
            self._next_part()
        self._part.write(row_line(row))
        self.rows += 1

    def _next_part(self) -> None:
        if self._part is not None:
            self._part.close()
        index = self.rows // self.rows_per_part
        # One part stays open across write() calls, so a context manager cannot hold it.
        self._part = open(self._temp / "rows" / f"part-{index:05d}.jsonl", "w",  # noqa: SIM115
                          encoding="utf-8")

    def close(self) -> Dataset:
        if self._part is not None:
            self._part.close()
        self.info["rows"] = self.rows
        write_text_atomic(self._temp / "dataset.json",
                          json.dumps(self.info, indent=1, ensure_ascii=False))
        write_text_atomic(self._temp / "manifest.json",
                          json.dumps(build_manifest(self._temp), indent=1))
        if self.path.exists():  # allowed by check_dataset_output: a dataset of ours, --force
            shutil.rmtree(self.path)
        os.replace(self._temp, self.path)
        return Dataset(self.path)

    def abort(self) -> None:
        if self._part is not None:
            self._part.close()
        shutil.rmtree(self._temp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
        else:
            self.abort()
        return False


def check_dataset_output(path: Path, force: bool = False) -> None:
    """A new dataset may replace only a dataset folder of ours, and only with --force."""
    if not path.exists():
        if not path.parent.is_dir():
            raise TinyLMError(f"output folder's parent does not exist: {path.parent}")
        return
    if not is_dataset(path):
        raise TinyLMError(f"{path} exists and is not a tinylm dataset; it is never replaced "
                          f"(choose another output)")
    if not force:
        raise TinyLMError(f"dataset {path} exists; pass --force to replace it")


# ------------------------------------------------------------------------- checks, reviews

def write_check(dataset: Dataset, name: str, payload: dict) -> Path:
    """Store a result about the dataset's current bytes (checks/NAME.json)."""
    record = {"format": "tinylm-dataset-check", "check": name,
              "manifest_sha256": dataset.manifest_sha256, "written": now_utc(), **payload}
    path = dataset.path / "checks" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=1, ensure_ascii=False))
    return path


def read_check(dataset: Dataset, name: str) -> dict | None:
    """checks/NAME.json if it was computed on exactly the current manifest, else None."""
    try:
        record = json.loads((dataset.path / "checks" / f"{name}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("manifest_sha256") != \
            dataset.manifest_sha256:
        return None
    return record
