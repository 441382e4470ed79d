"""Child processes die with their parent, even when the parent dies by `kill -9`.

Worker pools and benchmark processes call `die_with_parent(parent_pid)` first thing. On Linux
it asks the kernel for SIGKILL when the parent goes (`prctl(PR_SET_PDEATHSIG)`); everywhere it
also starts a daemon thread that polls the parent's liveness once a second, for systems without
prctl. Both then check that the parent is still the one expected, since the parent may have
died between the fork and the call (the signal would then never come).

A fork server's children are the fork server's, not ours; the fork server itself exits when our
end of its pipe closes, which takes them with it through the same signal.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make this process exit when `parent_pid` (default: the current parent) is gone."""
    parent_pid = parent_pid or os.getppid()
    if sys.platform.startswith("linux"):
        _pdeathsig()
    watch = threading.Thread(target=_watch, args=(parent_pid,), name="tinylm-parent-watch",
                             daemon=True)
    watch.start()
    if os.getppid() != parent_pid:  # the parent died before we could ask
        os._exit(1)


def _pdeathsig() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no libc prctl: the watchdog alone stands guard
        pass


def _watch(parent_pid: int, every: float = 1.0) -> None:
    while True:
        time.sleep(every)
        if os.getppid() != parent_pid:
            os._exit(1)


def pool_initializer(parent_pid: int) -> None:
    """For `ProcessPoolExecutor(initializer=pool_initializer, initargs=(os.getpid(),))`."""
    die_with_parent(parent_pid)
