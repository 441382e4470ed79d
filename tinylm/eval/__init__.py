"""Evaluation: one scoring core for every model, the model cards' benchmarks, isolation,
caching, the composite score and leaderboards.

    lm.py               LMScorer: loglikelihood, loglikelihood_rolling, generate_until
    tasks/              wikitext2, blimp, arc_easy, arc_challenge (a plain registry)
    harness.py          evaluate_checkpoint / evaluate_model, isolation, cache, composite
    results.py          result JSON, hashes, cache paths, atomic writes
    leaderboard.py      ranking in the terminal, Markdown and a self-contained HTML page
    lm_eval_adapter.py  a tinylm model as an lm-evaluation-harness LM, and local task configs
    cli.py              `tinylm eval`, `tinylm leaderboard`

Imports are lazy so that `import tinylm.eval` costs nothing.
"""

from __future__ import annotations

__all__ = ["EvalSettings", "LMScorer", "composite", "evaluate_checkpoint", "evaluate_model",
           "report", "summary"]


def __getattr__(name):
    if name == "LMScorer":
        from tinylm.eval.lm import LMScorer

        return LMScorer
    if name == "EvalSettings":
        from tinylm.eval.settings import EvalSettings

        return EvalSettings
    if name in ("composite", "evaluate_checkpoint", "evaluate_model", "report", "summary"):
        from tinylm.eval import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'tinylm.eval' has no attribute {name!r}")
