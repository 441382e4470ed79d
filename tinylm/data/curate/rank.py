"""`tinylm data rank`: a difficulty per row and a curriculum order (easy -> hard).

Difficulty is bits per byte (`scorers.py`): by default the zlib proxy (cheap, no model), or a
small tinylm model's per-byte loss with `--scorer CKPT`. It is written as `meta.difficulty`.

The curriculum is bucketed, as in "Baby Steps" (Spitkovsky et al. 2010; Bengio et al. 2009,
"Curriculum learning"): rows are cut into `--buckets` equal-count bands of difficulty (the
nearest-rank quantiles of `filter.py`), and the output dataset holds the bands in order,
easiest first, rows keeping their original order within a band. So the dataset's own row order
is the curriculum, and dataset.json's `curriculum` records the bands. A full sort is not
needed, and would not stream: three passes do it in constant memory (score through the engine,
count the distinct difficulties, then route rows to one temporary file per band and join the
bands).

`tinylm train --data DATASET --curriculum` follows that order (`tinylm.data.curriculum`).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tinylm.data.curate.dataset import DatasetWriter, iter_part, open_dataset, row_line
from tinylm.data.curate.engine import check_step_output, finish, run_row_step
from tinylm.data.curate.filter import ScoreStep, nearest_rank_percentile, row_score
from tinylm.errors import TinyLMError

MAX_BUCKETS = 100


@dataclass
class RankConfig:
    dataset: str
    out: str
    scorer: str | None = None    # "zlib" (default) or a tinylm checkpoint folder
    buckets: int = 10
    workers: int = 1
    engine: str = "auto"
    author: str | None = None
    force: bool = False

    def __post_init__(self):
        if not isinstance(self.buckets, int) or not 1 <= self.buckets <= MAX_BUCKETS:
            raise TinyLMError(f"--buckets must be a whole number in [1, {MAX_BUCKETS}], got "
                              f"{self.buckets!r}")


def band_edges(counts: Counter, buckets: int) -> list[float]:
    """Upper edges of the bands: band b holds difficulty <= edges[b] (and > edges[b-1])."""
    edges = [nearest_rank_percentile(counts, 100 * (b + 1) / buckets) for b in range(buckets)]
    return sorted(set(edges))  # a coarse score may merge bands


def band_of(value: float, edges: list[float]) -> int:
    from bisect import bisect_left

    return min(bisect_left(edges, value), len(edges) - 1)


def rank_dataset(config: RankConfig, log=print):
    from tinylm.data.curate.ingest import default_author
    from tinylm.data.curate.scorers import make_scorer

    source = open_dataset(config.dataset)
    scorer = make_scorer(config.scorer)
    out = check_step_output(config.dataset, config.out, config.force)  # before any work
    temp = out.parent / f".{out.name}.{os.getpid()}.ranked.tmp"
    temp.mkdir()
    try:
        writer = DatasetWriter(temp / "scored", source.name, source.author)
        result = run_row_step(source, ScoreStep(scorer, key="difficulty"), writer,  # pass 1
                              config.workers, config.engine)
        scored = writer.close()
        counts = Counter(row_score(row, "difficulty") for row in scored.iter_rows())  # pass 2
        edges = band_edges(counts, config.buckets)
        sizes = _route_to_bands(scored, edges, temp)  # pass 3
        # the same part size as the input, so the ranked dataset splits into as many parts
        per_part = max(1, -(-source.row_count() // max(1, len(source.parts))))
        writer = DatasetWriter(out, name=out.name, author=config.author or default_author(),
                               rows_per_part=per_part, force=config.force)
        for band in range(len(edges)):
            for row in iter_part(temp / f"band-{band:03d}.jsonl"):
                writer.write(row)
        entry = {"step": "rank", "difficulty": scorer.settings(), **result,
                 "rows_out": writer.rows}
        writer.info["curriculum"] = {
            "order": "easy-to-hard", "key": "meta.difficulty", "scorer": scorer.settings(),
            "bands": [{"rows": n, "max_difficulty": e} for n, e in zip(sizes, edges)],
            "within_band": "original order"}
        dataset = finish(writer, source, entry)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log(f"ranked {dataset.row_count()} rows into {len(edges)} band(s) of difficulty "
        f"({scorer.name} bits per byte, edges {', '.join(f'{e:.3f}' for e in edges)})")
    return dataset


def _route_to_bands(scored, edges: list[float], temp: Path) -> list[int]:
    handles = [open(temp / f"band-{b:03d}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
               for b in range(len(edges))]
    sizes = [0] * len(edges)
    try:
        for row in scored.iter_rows():
            band = band_of(row_score(row, "difficulty"), edges)
            handles[band].write(row_line(row))
            sizes[band] += 1
    finally:
        for handle in handles:
            handle.close()
    return sizes
