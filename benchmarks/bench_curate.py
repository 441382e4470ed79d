"""Rows per second of the curation steps at 1 and 2 workers, on the local corpora.

    python benchmarks/bench_curate.py [--corpora c4,fineweb-edu,tinystories] [--repeat 1]
                                      [--parts 8] [--keep-top 75]

For each corpus: `ingest` (one streaming reader: a single input file does not split across
workers); `rank` (zlib difficulty per row: a scoring pass through the engine, then the serial
band passes); `filter` of the ranked rows, top `--keep-top` percent (FineWeb-Edu by its
`score` column; C4 and TinyStories carry no score, so by `difficulty`, dropping the most
compressible rows); `tokenize` into packed shards with the byte tokenizer. Each of rank,
filter and tokenize runs in this process (1 worker), then as datatrove blocks on
LocalPipelineExecutor with 1 and with 2 workers. Prints rows in/out and rows/s of each (the
whole step: its serial passes, the manifest, datatrove's start-up), and checks that every run
wrote the same bytes. `--repeat K` ingests the corpus K times over (the local samples are
small; datatrove's start-up is a fixed cost per run).

The process must not import torch (datatrove then forks its workers; see `engine.py`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tinylm.data.curate.dataset import open_dataset
from tinylm.data.curate.filter import FilterConfig, filter_dataset
from tinylm.data.curate.ingest import IngestConfig, ingest
from tinylm.data.curate.rank import RankConfig, rank_dataset
from tinylm.data.curate.shards import write_shards
from tinylm.tokenizers import ByteTokenizer

SCORE = {"fineweb-edu": "score"}  # the others carry no score: their rank's difficulty
# (engine, workers): this process alone; datatrove with 1 worker (its fixed cost); with 2
RUNS = (("inprocess", 1), ("datatrove", 1), ("datatrove", 2))


def quiet(*_):
    pass


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_corpus(name: str, work: Path, args) -> list[str]:
    lines = []
    first = ingest(IngestConfig([name], str(work / "probe"), author="bench"), log=quiet)
    rows = first.row_count() * args.repeat
    per_part = max(1, -(-rows // args.parts))
    source, seconds = timed(lambda: ingest(IngestConfig([name] * args.repeat,
                                                        str(work / "raw"), author="bench",
                                                        rows_per_part=per_part), log=quiet))
    lines.append(f"{name:12s} ingest    inprocess 1: {rows:7d} rows{'':11s}"
                 f"{rows / seconds:9,.0f} rows/s  ({len(source.parts)} parts)")
    ranked = {}
    for engine, workers in RUNS:
        config = RankConfig(str(source.path), str(work / f"ranked-{engine}{workers}"),
                            workers=workers, engine=engine, author="bench")
        ranked[engine, workers], seconds = timed(lambda c=config: rank_dataset(c, log=quiet))
        lines.append(f"{name:12s} rank      {engine:9s} {workers}: {rows:7d} rows{'':11s}"
                     f"{rows / seconds:9,.0f} rows/s  (zlib difficulty)")
    scored = ranked[RUNS[0]]
    column = SCORE.get(name, "difficulty")
    filtered = {}
    for engine, workers in RUNS:
        config = FilterConfig(str(scored.path), str(work / f"filtered-{engine}{workers}"),
                              score_column=column, keep_top=args.keep_top, workers=workers,
                              engine=engine, author="bench")
        filtered[engine, workers], seconds = timed(lambda c=config: filter_dataset(c,
                                                                                   log=quiet))
        lines.append(f"{name:12s} filter    {engine:9s} {workers}: {rows:7d} -> "
                     f"{filtered[engine, workers].row_count():7d} rows {rows / seconds:9,.0f} "
                     f"rows/s  (top {args.keep_top:g}% by {column})")
    tokenizer = work / "bytes.json"
    ByteTokenizer().save(tokenizer)
    kept, shards = filtered[RUNS[0]], {}
    for engine, workers in RUNS:
        counts, seconds = timed(lambda e=engine, w=workers: write_shards(
            kept.path, tokenizer, work / f"shards-{e}{w}", workers=w, engine=e))
        shards[engine, workers] = work / f"shards-{engine}{workers}"
        lines.append(f"{name:12s} tokenize  {engine:9s} {workers}: {kept.row_count():7d} rows"
                     f"{'':11s}{kept.row_count() / seconds:9,.0f} rows/s  "
                     f"({(counts['train'] + counts['val']) / seconds:,.0f} tokens/s)")
    same = all(_rows_files(o.path) == _rows_files(kept.path) for o in filtered.values()) and \
        all(_rows_files(o.path) == _rows_files(scored.path) for o in ranked.values())
    base = shards[RUNS[0]]
    same_shards = all((base / p.name).read_bytes() == p.read_bytes()
                      for folder in shards.values() for p in folder.glob("*.bin"))
    lines.append(f"{name:12s} every run wrote the same rows: {same}, the same shards: "
                 f"{same_shards}")
    return lines


def _rows_files(path: Path) -> dict:
    files = open_dataset(path).manifest["files"]
    return {k: v for k, v in files.items() if k.startswith("rows/")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default="c4,fineweb-edu,tinystories")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--parts", type=int, default=8, help="parts per dataset (the unit "
                                                             "of parallel work)")
    parser.add_argument("--keep-top", type=float, default=75)
    args = parser.parse_args()
    if "torch" in sys.modules:
        sys.exit("bench_curate must run without torch imported (datatrove forks workers)")
    print(f"curation rows/s; repeat {args.repeat}, {args.parts} parts per dataset")
    for name in args.corpora.split(","):
        with tempfile.TemporaryDirectory() as folder:
            for line in bench_corpus(name, Path(folder), args):
                print(line, flush=True)


if __name__ == "__main__":
    main()
