"""One process at a time in a run folder: an OS file lock held for the process's life.

`RUN/.lock` is locked with `fcntl.flock` (exclusive, non-blocking) while a process trains,
scores or runs a tournament in the folder, and holds the holder's PID as text; it is removed
when the holder finishes. The OS drops the lock when the holder dies, even by `kill -9`, so a
lock is never stuck: the file a dead holder leaves is reported ("taking over the stale lock of
PID N") and reused. A second process gets one line naming the holder's PID. Since the file is
removed on release, a locker checks after locking that the file it locked is still the one at
the path (else it locked a removed file, and tries again).

Re-entrant within a process (the pipeline holds the lock and its training stage asks again),
and inherited by child processes through `$TINYLM_RUN_LOCK`: `tinylm run` with several
processes starts torchrun under its lock, and DDP ranks share that one lock (only rank 0 of a
torchrun started by hand takes it).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.io import pid_alive

LOCK_FILE = ".lock"
ENV = "TINYLM_RUN_LOCK"
_held: dict[str, tuple[int, int]] = {}  # resolved folder -> (fd, depth)


def _key(folder: Path) -> str:
    return str(Path(folder).resolve())


def _inherited(key: str) -> bool:
    held = os.environ.get(ENV, "")
    return key in held.split(os.pathsep) if held else False


@contextlib.contextmanager
def run_lock(folder: str | Path, log=print):
    """Hold the lock of `folder` (created if missing) for the `with` block."""
    folder = Path(folder)
    key = _key(folder)
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            _held[key] = (fd, _held[key][1] - 1)
        return
    if _inherited(key) or os.environ.get("RANK", "0") != "0":
        yield  # our parent holds it, or rank 0 of this torchrun does
        return
    fd = acquire(folder, log)
    _held[key] = (fd, 1)
    previous = os.environ.get(ENV)
    os.environ[ENV] = os.pathsep.join(filter(None, [previous, key]))
    try:
        yield
    finally:
        del _held[key]
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        release(folder, fd)


def acquire(folder: Path, log=print) -> int:
    for _ in range(10):
        fd = _lock_once(folder)
        if _is_current(folder, fd):
            break
        os.close(fd)  # we locked a file its holder removed on release: lock the new one
    else:
        raise TinyLMError(f"cannot lock {folder}: the lock file keeps changing")
    stale = _read_pid(fd)
    if stale and stale != os.getpid():
        state = "no longer running" if not pid_alive(stale) else "it no longer holds the lock"
        log(f"taking over the stale lock of PID {stale} in {folder} ({state})")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _lock_once(folder: Path) -> int:
    import fcntl

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise TinyLMError(f"cannot lock {folder}: {err.strerror or err}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_pid(fd)
        os.close(fd)
        who = f"PID {holder}" if holder else "another process"
        raise TinyLMError(f"{folder} is in use by {who} (locked in {folder / LOCK_FILE}); wait "
                          f"for it to finish or stop it") from None
    return fd


def _is_current(folder: Path, fd: int) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(folder / LOCK_FILE).st_ino
    except OSError:
        return False


def release(folder: Path, fd: int) -> None:
    """Remove the lock file (while still holding it, so nobody else holds it), then unlock."""
    with contextlib.suppress(OSError):
        if _is_current(folder, fd):
            (folder / LOCK_FILE).unlink()
    os.close(fd)  # closing drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", errors="replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None

