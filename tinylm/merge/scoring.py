"""The tournament's scorer: a checkpoint folder -> flat metrics with the composite, through the
evaluation harness (cached by model hash, so a checkpoint scored during training, or in an
earlier run of the tournament, is never scored again)."""

from __future__ import annotations

import functools
from pathlib import Path


def score_checkpoint(path: Path, benches: tuple[str, ...], settings: dict, arc_metric: str,
                     data_dir: str | None, threads: int = 1) -> dict:
    from tinylm.data.sources import resolve_data_dir
    from tinylm.errors import TinyLMError
    from tinylm.eval.harness import evaluate_checkpoint, summary

    results = evaluate_checkpoint(path, list(benches), settings, resolve_data_dir(data_dir),
                                  isolate=False, threads=threads)
    failed = [b for b, r in results.items() if r.get("status") != "ok"]
    if failed:
        raise TinyLMError(f"{path}: benchmark(s) {failed} failed")
    return summary(results, arc_metric)


def make_scorer(scoring=None, data_dir=None, threads: int = 1):
    """(picklable scorer, the settings it scores with) for `Tournament` and `tinylm run`, from a
    `ScoringConfig` (default: every composite benchmark, full sets, default settings)."""
    from tinylm.errors import TinyLMError
    from tinylm.eval.harness import COMPOSITE_BENCHES, check_request
    from tinylm.eval.settings import ScoringConfig
    from tinylm.eval.tasks import get_benchmark

    scoring = scoring or ScoringConfig()
    names = tuple(check_request(scoring.bench, scoring.limit, data_dir))  # before any work
    missing = [b for b in COMPOSITE_BENCHES if b not in names]
    if missing:
        raise TinyLMError(f"the composite needs {', '.join(COMPOSITE_BENCHES)}; missing "
                          f"{', '.join(missing)}")
    arc_metric, shots = scoring.settings.arc_metric, scoring.settings.shots
    if arc_metric not in ("acc", "acc_norm"):
        raise TinyLMError(f"--arc-metric must be acc or acc_norm, got {arc_metric!r}")
    if not 0 <= shots <= 25:
        raise TinyLMError(f"--shots must be a whole number in [0, 25], got {shots}")
    settings = {b: {"limit": scoring.limit,
                    **scoring.settings.subset(get_benchmark(b).settings)} for b in names}
    scorer = functools.partial(score_checkpoint, benches=names, settings=settings,
                               arc_metric=arc_metric, data_dir=data_dir, threads=threads)
    described = {"benches": ",".join(names), "limit": scoring.limit, "arc_metric": arc_metric,
                 "shots": scoring.settings.shots, "settings": settings}
    return scorer, described
