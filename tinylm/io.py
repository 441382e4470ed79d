"""Files on disk: atomic writes, sha256, the cache dir, and who owns an output.

Writes. Every file tinylm writes goes to a temporary sibling first (`.NAME.<pid>.*.tmp`), is
fsync'ed, then renamed over the target in one step, so a reader (or a `kill -9`) sees the old
file or the new one, never half of one. Folders (checkpoints) are written the same way by
`train/checkpoint.py`. A temporary left by a killed writer is removed by the next writer in that
folder once its process is gone (`remove_stale_temps`).

Ownership. tinylm replaces or deletes only what it can tell it made. The markers are:

    checkpoint folder   meta.json holding {"format": "tinylm-checkpoint"}, and no other files
                        than a checkpoint holds (model/state .safetensors, tokenizer.json,
                        meta.json, eval.json)
    run folder          run.json (written by `tinylm train`) or pipeline.json (`tinylm run`);
                        never replaced by any other command, --force or not
    JSON file           a top-level object whose "format" starts with "tinylm-" (tokenizers,
                        eval reports, tournament state, result files)
    text file           (exported .py, Markdown, HTML) "tinylm" within its first 4 KiB
    binary file         "tinylm" within its first 4 KiB (a bitnet .tlm's header, a PNG's
                        Software chunk), or a format magic of ours at its start (qkvae's
                        token stream, QKV1)

`check_output` applies the rule of issue 17 before any work starts: an output that exists and
is not ours is refused unless `force`; even with `force`, an input of the same command, a run
folder, a folder holding files tinylm did not write, or a file inside a checkpoint or run
folder is never replaced.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from tinylm.errors import TinyLMError

RUN_MARKERS = ("run.json", "pipeline.json")
CHECKPOINT_FORMAT = "tinylm-checkpoint"
CHECKPOINT_FILES = {"model.safetensors", "state.safetensors", "tokenizer.json", "meta.json",
                    "eval.json"}
_FILE_HASHES: dict[tuple, str] = {}


class WriteError(TinyLMError, OSError):
    """A write that the disk refused (full, read-only, permission): one line naming the path.
    It is an OSError too, so callers that tolerate an unwritable side file still do."""

    def __str__(self) -> str:
        return str(self.strerror)


# --------------------------------------------------------------------------- cache dir

def default_cache_dir(kind: str) -> Path:
    """$TINYLM_CACHE/<kind>, else ~/.cache/tinylm/<kind> (kind: "eval", "tokens", ...)."""
    root = os.environ.get("TINYLM_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "tinylm") / kind


# --------------------------------------------------------------------------- hashes

def sha256_file(path: str | Path, remember: bool = False) -> str:
    """sha256 of a file's bytes. With `remember`, kept for the process by (path, size, mtime):
    for data files hashed again and again, never for verifying a checkpoint."""
    path = Path(path)
    key = None
    if remember:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _FILE_HASHES:
            return _FILE_HASHES[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    if key is not None:
        _FILE_HASHES[key] = digest.hexdigest()
    return digest.hexdigest()


def canonical_sha256(data) -> str:
    """sha256 of JSON data written canonically (sorted keys, no spaces)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- atomic writes

def temp_prefix(path: Path) -> str:
    """Temporaries carry the writer's pid, so a later writer can tell a dead one's leftovers."""
    return f".{path.name}.{os.getpid()}."


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename: a reader sees old or new, never
    half. A disk that refuses the write raises `WriteError` naming the path; the old file is
    left as it was."""
    write_bytes_atomic(Path(path), text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
        os.fchmod(fd, _mode_for(path))  # mkstemp makes 0600; keep what a plain open() makes
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise write_error(path, err) from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777  # replacing a file keeps its permissions
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_error(path: Path, err: OSError, kept: str = "the old file is unchanged") -> WriteError:
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
    return WriteError(err.errno, f"cannot write {path}: {reason}; {kept}")


_TEMP = re.compile(r"^\..+\.(\d+)\..*\.tmp$|^\..+\.old-(\d+)$")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporaries in `folder` whose writer process is gone (a killed save)."""
    removed = []
    if not Path(folder).is_dir():
        return removed
    for entry in Path(folder).iterdir():
        match = _TEMP.match(entry.name)
        if not match:
            continue
        pid = int(match.group(1) or match.group(2))
        if pid != os.getpid() and pid_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


# --------------------------------------------------------------------------- ownership

def is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in RUN_MARKERS)


def is_checkpoint_folder(path: Path) -> bool:
    return path.is_dir() and _json_format(path / "meta.json") == CHECKPOINT_FORMAT


def _json_format(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    fmt = data.get("format") if isinstance(data, dict) else None
    return fmt if isinstance(fmt, str) else None


def owns_file(path: Path) -> bool:
    """A file tinylm wrote (see the module docstring for the markers)."""
    fmt = _json_format(path) if path.suffix == ".json" else None
    if fmt is not None:
        return fmt.startswith("tinylm-")
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b"tinylm" in head or head.startswith(OWNED_MAGICS)


OWNED_MAGICS = (b"QKV1",)  # binary formats of ours that carry no "tinylm" text


def foreign_files(folder: Path) -> list[str]:
    """Names in a checkpoint-like output folder that a checkpoint does not hold."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name not in CHECKPOINT_FILES and not _TEMP.match(p.name))


def _same_or_inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_output(path: str | Path, kind: str, inputs=(), force: bool = False) -> Path:
    """Refuse, with one line, an output that must not be written; see the module docstring.

    kind: "checkpoint" (a folder written whole) or "file". Returns the path."""
    path = Path(path)
    if path.is_dir() and is_run_folder(path):
        raise TinyLMError(f"{path} is a run folder; it is never replaced (choose another "
                          f"output)")
    for source in inputs:
        if source is not None and Path(source).exists() and _same_or_inside(path, Path(source)):
            raise TinyLMError(f"output {path} is (or holds, or lies inside) the input {source}; "
                              f"choose another output")
    if not path.exists() and not path.is_symlink():
        _refuse_inside_owned(path)
        return path
    if kind == "checkpoint":
        return _check_checkpoint_output(path, force)
    if path.is_dir():
        raise TinyLMError(f"output {path} is a folder; give a file name")
    _refuse_inside_owned(path)
    if not owns_file(path) and not force:
        raise TinyLMError(f"{path} exists and was not written by tinylm; pass --force to "
                          f"replace it")
    return path


def _check_checkpoint_output(path: Path, force: bool) -> Path:
    if not path.is_dir():
        if not force:
            raise TinyLMError(f"output {path} is an existing file; a checkpoint is a folder "
                              f"(pass --force to replace the file)")
        return path
    if is_checkpoint_folder(path):
        extra = foreign_files(path)
        if extra:
            raise TinyLMError(f"{path} holds files a checkpoint does not ({', '.join(extra[:3])}"
                              f"); it is never replaced")
        return path
    if any(path.iterdir()):
        raise TinyLMError(f"{path} is a folder that holds files tinylm did not write; it is "
                          f"never replaced (choose another output)")
    return path


RUN_FILES = {*RUN_MARKERS, "tokenizer.json", "metrics.jsonl", ".lock"}


def _refuse_inside_owned(path: Path) -> None:
    """No file is written into a checkpoint by hand, nor over a run folder's own files."""
    parent = path.parent
    if is_checkpoint_folder(parent):
        raise TinyLMError(f"{path} lies inside the checkpoint {parent}; write it elsewhere")
    if is_run_folder(parent) and path.name in RUN_FILES:
        raise TinyLMError(f"{path} is part of the run folder {parent}; write it elsewhere")


def remove_path(path: Path) -> None:
    """Remove a file or a whole folder (only after `check_output` allowed replacing it)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
