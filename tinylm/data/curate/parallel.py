"""Run a function over a dataset's parts in a process pool, results in part order.

At most `2 * workers` parts are in flight, so a corpus of any number of parts streams through
in memory bounded by a few parts' results. Workers are forked, so whatever the parent built
before the call (the benchmark n-gram index, the source profiles) is shared copy-on-write
instead of rebuilt in each worker. `workers=1` runs in this process (no pool at all).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

from tinylm.errors import TinyLMError


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def check_workers(workers: int) -> int:
    if not isinstance(workers, int) or workers < 1:
        raise TinyLMError(f"--workers must be a positive integer, not {workers!r}")
    return workers


def map_parts(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """fn(item) for each item, in order, computed by `workers` processes."""
    if check_workers(workers) == 1:
        yield from map(fn, items)
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
