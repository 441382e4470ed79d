"""The held-out report of a `tinylm run`: the models the run chose, scored once on the report
split, with standard errors and a paired test of the champion against the best checkpoint.

Everything the pipeline picks (the tournament's brackets, the champion, the best checkpoint)
was picked on the selection split. Their selection scores are optimistic: a maximum over many
noisy candidates. Scoring the chosen few on items nothing looked at before gives the numbers a
user can expect, and the two side by side show how much selection flattered them.

The rows: the champion, the best single checkpoint, the best SLERP merge, each baseline
(soups, LAWA, EMA) and the final checkpoint of the recipe's control run (same compute, with
e.g. a decay phase). The paired comparison resamples the same report items for both models
(`tinylm.eval.stats.compare`, a paired bootstrap; McNemar's exact test for ARC); the
composite's difference combines the three benchmarks' as independent, so its standard error is
the root of the summed squares over 3.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tinylm.io import write_text_atomic

HELDOUT_FILE = "heldout.json"


def chosen_models(pipeline) -> list[dict]:
    """[{role, name, path, selection}]: what the run chose, each once (a role may repeat a
    model: the champion is often the best checkpoint)."""
    from tinylm.train.checkpoint import list_checkpoints

    tournament = pipeline._tournament()
    rows = [{"role": "champion", "name": tournament.ranked()[0].name,
             "path": str(pipeline.out / "champion"), "selection": tournament.ranked()[0].metrics}]
    best, merge = tournament.best_checkpoint(), tournament.best_merge()
    rows.append({"role": "best checkpoint", "name": best.name, "path": best.path,
                 "selection": best.metrics})
    if merge is not None:
        rows.append({"role": "best SLERP merge", "name": merge.name, "path": merge.path,
                     "selection": merge.metrics})
    for entry in tournament.baselines():
        rows.append({"role": "baseline", "name": entry.name, "path": entry.path,
                     "selection": entry.metrics})
    control = list_checkpoints(pipeline.out / "control" / "checkpoints")
    if control:
        scorer, _ = pipeline.scorer("selection")
        rows.append({"role": "control run (last checkpoint)", "name": f"control/{control[-1].name}",
                     "path": str(control[-1]), "selection": scorer(control[-1])})
    return rows


def heldout_report(pipeline) -> Path:
    """Score the chosen models on the report split; write RUN/heldout.json."""
    from tinylm.data.sources import resolve_data_dir
    from tinylm.eval.harness import evaluate_checkpoint, summary

    _, described = pipeline.scorer("report")
    benches, arc_metric = described["benches"].split(","), described["arc_metric"]
    data_dir = resolve_data_dir(pipeline.recipe.data.data_dir)
    rows, results = chosen_models(pipeline), {}
    for row in rows:
        if row["path"] not in results:
            results[row["path"]] = evaluate_checkpoint(row["path"], benches,
                                                       described["settings"], data_dir)
        failed = [b for b, r in results[row["path"]].items() if r.get("status") != "ok"]
        if failed:
            from tinylm.errors import TinyLMError

            raise TinyLMError(f"{row['path']}: report-split benchmark(s) {failed} failed")
        row["report"] = summary(results[row["path"]], arc_metric)
        pipeline.log(f"  {row['role']:32s} report composite {row['report']['composite']:.4f} "
                     f"(selection {row['selection']['composite']:.4f})")
    champion, best = rows[0], rows[1]
    doc = {"split": "report", "scoring": described, "models": rows,
           "champion_vs_best_checkpoint": paired(results[champion["path"]],
                                                 results[best["path"]], arc_metric)
           if champion["name"] != best["name"] else None}
    path = pipeline.out / HELDOUT_FILE
    write_text_atomic(path, json.dumps(doc, indent=1))
    return path


def paired(results_a: dict, results_b: dict, arc_metric: str, seed: int = 0) -> dict:
    """a minus b on the same report items: per benchmark (paired bootstrap) and the
    composite (lower is better, so a negative composite difference favours a)."""
    from scipy.stats import norm

    from tinylm.eval.stats import compare

    parts = {"wikitext2": compare(results_a["wikitext2"]["scores"],
                                  results_b["wikitext2"]["scores"], "wikitext2", "ce_loss",
                                  seed=seed),
             "blimp": compare(results_a["blimp"]["scores"], results_b["blimp"]["scores"],
                              "blimp", seed=seed),
             "arc_easy": compare(results_a["arc_easy"]["scores"],
                                 results_b["arc_easy"]["scores"], "arc_easy", arc_metric,
                                 seed=seed)}
    diff = (parts["wikitext2"]["diff"] - parts["blimp"]["diff"] - parts["arc_easy"]["diff"]) / 3
    se = math.sqrt(sum(p["se"] ** 2 for p in parts.values())) / 3
    p = float(2 * norm.sf(abs(diff) / se)) if se > 0 else 1.0
    composite = {"diff": diff, "se": se, "ci_low": diff - 1.96 * se, "ci_high": diff + 1.96 * se,
                 "p": p, "method": "benchmarks' paired bootstraps combined as independent"}
    return {"composite": composite, **parts}


def load_heldout(out: Path) -> dict | None:
    path = Path(out) / HELDOUT_FILE
    return json.loads(path.read_text()) if path.is_file() else None
