"""The tournament's scorer: a checkpoint folder -> flat metrics with the composite, through the
evaluation harness (cached by model hash, so a checkpoint scored during training, or in an
earlier run of the tournament, is never scored again)."""

from __future__ import annotations

import functools
from pathlib import Path


OBJECTIVES = ("base", "instruct")


def score_checkpoint(path: Path, benches: tuple[str, ...], settings: dict, arc_metric: str,
                     data_dir: str | None, threads: int = 1, objective: str = "base") -> dict:
    from tinylm.data.sources import resolve_data_dir
    from tinylm.errors import TinyLMError
    from tinylm.eval.harness import evaluate_checkpoint, summary

    results = evaluate_checkpoint(path, list(benches), settings, resolve_data_dir(data_dir),
                                  isolate=False, threads=threads)
    failed = [b for b, r in results.items() if r.get("status") != "ok"]
    if failed:
        raise TinyLMError(f"{path}: benchmark(s) {failed} failed")
    flat = summary(results, arc_metric)
    if objective == "instruct":  # the tournament ranks by "composite": make it the instruct one
        flat["base_composite"] = flat["composite"]
        flat["base_composite_se"] = flat.pop("composite_se", None)
        flat["composite"] = flat["instruct_composite"]
        if "instruct_composite_se" in flat:
            flat["composite_se"] = flat["instruct_composite_se"]
    return flat


def make_scorer(scoring=None, data_dir=None, threads: int = 1, objective: str = "base"):
    """(picklable scorer, the settings it scores with) for `Tournament` and `tinylm run`, from a
    `ScoringConfig` (default: every composite benchmark, full sets, default settings).
    objective "instruct" adds the gsm8k_chat benchmark when missing and ranks by the instruct
    composite (`harness.instruct_composite`); the base composite stays as base_composite."""
    from tinylm.errors import TinyLMError
    from tinylm.eval.harness import COMPOSITE_BENCHES, check_request
    from tinylm.eval.settings import ScoringConfig
    from tinylm.eval.tasks import get_benchmark

    scoring = scoring or ScoringConfig()
    if objective not in OBJECTIVES:
        raise TinyLMError(f"--objective must be one of {', '.join(OBJECTIVES)}, got "
                          f"{objective!r}")
    bench = scoring.bench
    if objective == "instruct" and "gsm8k_chat" not in bench.split(","):
        bench = f"{bench},gsm8k_chat"
    names = tuple(check_request(bench, scoring.limit, data_dir))  # before any work
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
                               arc_metric=arc_metric, data_dir=data_dir, threads=threads,
                               objective=objective)
    described = {"benches": ",".join(names), "limit": scoring.limit, "arc_metric": arc_metric,
                 "shots": scoring.settings.shots, "settings": settings}
    if objective != "base":  # only then, so a base tournament's saved settings are unchanged
        described["objective"] = objective
    return scorer, described
