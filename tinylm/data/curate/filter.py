"""`tinylm data filter`: keep the rows whose score is in the top q percent, or above a bar.

The score is a column of the rows' `meta` (`--score-column`, e.g. FineWeb-Edu's annotated
`score`, 2-5 on the 150 local documents, or the `difficulty` that `tinylm data rank` writes) or
a learned one (`--scorer CKPT`: a tinylm checkpoint's bits per byte of each row, `scorers.py`,
the learned scorer built here; the row's score is then its negated bits per byte,
`meta.quality`, so that higher is better either way).

Two streaming passes. The first reads the scores alone and counts each distinct value; the
second keeps rows through the engine (`engine.py`: in-process or datatrove workers). Memory is
the number of distinct scores: a handful for an integer score; a continuous score is rounded
to 6 significant digits before counting and comparing, which bounds it.

Keep-top-q. "Keep the top 75 percent" is "score >= the 25th percentile", the blog's
"int_score >= 25th percentile". The percentile is the nearest-rank one: the value at rank
ceil(p/100 * N) of the scores in ascending order (Hyndman & Fan's definition 1). Ties at the
threshold are all kept, so a coarse score may keep more than q percent; the history records
the threshold and the fraction actually kept.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass

from tinylm.data.curate.dataset import DatasetWriter, open_dataset
from tinylm.data.curate.engine import RowStep, check_step_output, finish, run_row_step
from tinylm.errors import TinyLMError


@dataclass
class FilterConfig:
    dataset: str
    out: str
    score_column: str | None = None
    scorer: str | None = None        # a tinylm checkpoint folder: the learned score
    keep_top: float | None = None    # percent of rows to keep, by score, (0, 100]
    min_score: float | None = None
    workers: int = 1
    engine: str = "auto"
    author: str | None = None
    force: bool = False

    def __post_init__(self):
        if (self.score_column is None) == (self.scorer is None):
            raise TinyLMError("filter needs exactly one of --score-column NAME or --scorer "
                              "CHECKPOINT")
        if (self.keep_top is None) == (self.min_score is None):
            raise TinyLMError("filter needs exactly one of --keep-top PERCENT or --min-score X")
        if self.keep_top is not None and not (0 < self.keep_top <= 100):
            raise TinyLMError(f"--keep-top must be a percent in (0, 100], got {self.keep_top}")
        if self.min_score is not None and not math.isfinite(self.min_score):
            raise TinyLMError(f"--min-score must be a finite number, got {self.min_score}")
        if self.scorer == "zlib":  # compressible is not better: it keeps boilerplate
            raise TinyLMError("filter's --scorer is a tinylm checkpoint (a learned score); "
                              "zlib is a difficulty proxy: `tinylm data rank`, then filter "
                              "with --score-column difficulty")


def score_key(value: float) -> float:
    """Scores are counted and compared at 6 significant digits (see the module docstring)."""
    return float(f"{value:.6g}")


def row_score(row: dict, column: str) -> float:
    value = row.get("meta", {}).get(column)
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        raise TinyLMError(f"row {row.get('id')}: score column {column!r} is "
                          f"{'missing' if value is None else repr(value)}, not a finite number")
    return score_key(score)


def nearest_rank_percentile(counts: Counter, percent: float) -> float:
    """The value at rank ceil(percent/100 * N) (1-based, ascending); the minimum for 0."""
    total = sum(counts.values())
    rank = max(1, math.ceil(percent / 100 * total - 1e-9))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return max(counts)


class ScoreStep(RowStep):
    """Writes a scorer's bits per byte into meta[key] (and its negation into meta["quality"]
    when `quality`), keeping every row."""

    def __init__(self, scorer, key: str = "bits_per_byte", quality: bool = False):
        self.scorer, self.key, self.quality = scorer, key, quality
        self.name = f"score {scorer.name}"

    def __call__(self, row: dict) -> dict:
        bpb = self.scorer.bits_per_byte(row["text"])
        meta = {**row.get("meta", {}), self.key: score_key(bpb)}  # stored as compared
        if self.quality:
            meta["quality"] = score_key(-bpb)
        return {**row, "meta": meta}


class KeepByScore(RowStep):
    name = "keep by score"

    def __init__(self, column: str, threshold: float):
        self.column, self.threshold = column, threshold

    def __call__(self, row: dict) -> dict | None:
        return row if row_score(row, self.column) >= self.threshold else None


def filter_dataset(config: FilterConfig, log=print):
    from tinylm.data.curate.ingest import default_author

    source = open_dataset(config.dataset)
    out = check_step_output(config.dataset, config.out, config.force)
    scored, column, settings = source, config.score_column, {}
    temp = None
    if config.scorer is not None:  # pass 0: the learned score, written into each row
        from tinylm.data.curate.scorers import make_scorer

        scorer = make_scorer(config.scorer)
        settings = scorer.settings()
        temp = out.parent / f".{out.name}.{os.getpid()}.scored.tmp"
        writer = DatasetWriter(temp, name=source.name, author=source.author, force=True)
        run_row_step(source, ScoreStep(scorer, quality=True), writer, config.workers,
                     config.engine)
        scored, column = finish(writer, source, {"step": "score", **settings}), "quality"
    try:
        counts = Counter(row_score(row, column) for row in scored.iter_rows())  # pass 1
        if not counts:
            raise TinyLMError(f"{source.path}: no rows to filter")
        threshold = (config.min_score if config.min_score is not None
                     else nearest_rank_percentile(counts, 100 - config.keep_top))
        writer = DatasetWriter(out, name=out.name, author=config.author or default_author(),
                               force=config.force)
        result = run_row_step(scored, KeepByScore(column, threshold), writer,  # pass 2
                              config.workers, config.engine)
        entry = {"step": "filter", "score": column,
                 **({"scorer": settings} if settings else {}),
                 "keep_top_percent": config.keep_top, "min_score": config.min_score,
                 "threshold": threshold, "ties": "kept (score >= threshold)",
                 "score_counts": {str(k): v for k, v in sorted(counts.items())[:50]},
                 **result, "kept_fraction": round(result["rows_out"] / result["rows_in"], 6)}
        dataset = finish(writer, source, entry)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    log(f"kept {result['rows_out']} of {result['rows_in']} rows ({column} >= {threshold})")
    return dataset
