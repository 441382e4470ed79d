"""The benchmarks, by name: a plain dict of `Benchmark` records.

A benchmark is a short Python module with a `run(scorer, settings, limit, data_dir) -> scores`
function that asks an `LMScorer` for log-probabilities and turns them into metrics with
lm-eval's names. Its record says which data files it reads (their sha256 goes into every
result, and their absence skips the benchmark with a message naming them; `files` may take the
EvalSettings as a second argument when the files depend on them, as on `split`), which settings
change its scores (the cache key) and which metric leaderboards show.

A benchmark whose items are independent may be split (`shards`): with a shard (i, n), `run`
scores its i-th part only and returns what `merge` needs to build the scores of the whole.
The isolating harness then runs the parts as separate processes, so two cores stay busy even
when one benchmark is most of the work (BLiMP).

A user benchmark is registered with `register(Benchmark(...))` from any module; children of
the isolating harness re-import that module from its file (`source_file`), so it works there too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tinylm.errors import TinyLMError


@dataclass(frozen=True)
class Benchmark:
    name: str
    version: str
    description: str
    settings: tuple[str, ...]                       # EvalSettings fields that change scores
    files: Callable[..., list[Path]]                # (data_dir[, settings]) -> files it reads
    run: Callable[..., dict]                        # (scorer, settings, limit, data_dir)
    headline: tuple[str, str] = ("acc", "higher")   # (score key, better direction)
    details: tuple[str, ...] = ()                   # other scores worth a glance in a table
    shards: int = 1            # >1: run(..., shard=(i, n)) returns a part and merge() joins them
    merge: Callable[[list, object], dict] | None = None   # (parts, settings) -> scores
    cost: float = 1.0          # relative run time, to start the longest first
    source_file: str = field(default="", compare=False)

    def data_files(self, data_dir: Path, settings=None) -> list[Path]:
        """The files scored with these settings; a one-argument `files` ignores them."""
        if settings is not None and len(inspect.signature(self.files).parameters) > 1:
            return self.files(data_dir, settings)
        return self.files(data_dir)

    def missing_files(self, data_dir: Path, settings=None) -> list[Path]:
        return [f for f in self.data_files(data_dir, settings) if not f.is_file()]


BENCHMARKS: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    if not benchmark.source_file:
        object.__setattr__(benchmark, "source_file", inspect.getsourcefile(benchmark.run) or "")
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise TinyLMError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def read_jsonl(path: Path) -> list[dict]:
    import json

    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as err:
                    raise TinyLMError(f"{path}:{n}: not a JSON line ({err})") from None
    return rows


def _register_builtins() -> None:
    from tinylm.eval.tasks import arc, blimp, gsm8k_chat, wikitext

    for module in (wikitext, blimp, arc, gsm8k_chat):
        for benchmark in module.BENCHMARKS:
            register(benchmark)


_register_builtins()
