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


def scorer_from_settings(benches="wikitext2,blimp,arc_easy", limit=None, arc_metric="acc",
                         shots=0, data_dir=None, threads: int = 1):
    """(picklable scorer, the settings it scores with) for `Tournament` and `tinylm run`."""
    from tinylm.eval.harness import COMPOSITE_BENCHES, bench_settings, check_request
    from tinylm.errors import TinyLMError

    names = tuple(check_request(benches, limit, data_dir))  # before any training or merging
    missing = [b for b in COMPOSITE_BENCHES if b not in names]
    if missing:
        raise TinyLMError(f"the composite needs {', '.join(COMPOSITE_BENCHES)}; missing "
                          f"{', '.join(missing)}")
    if arc_metric not in ("acc", "acc_norm"):
        raise TinyLMError(f"--arc-metric must be acc or acc_norm, got {arc_metric!r}")
    if isinstance(shots, bool) or not isinstance(shots, int) or not 0 <= shots <= 25:
        raise TinyLMError(f"--shots must be a whole number in [0, 25], got {shots}")
    settings = {b: bench_settings(b, limit=limit, shots=shots) for b in names}
    scorer = functools.partial(score_checkpoint, benches=names, settings=settings,
                               arc_metric=arc_metric, data_dir=data_dir, threads=threads)
    described = {"benches": ",".join(names), "limit": limit, "arc_metric": arc_metric,
                 "shots": shots, "settings": settings}
    return scorer, described
