"""The tournament's searches side by side on one run: the grid (every pair of the pool at every
t of the grid) against Optuna's CMA-ES and TPE over the per-group t vector of the pool's best
pair, each with the same number of merges per generation, on the selection split.

    python benchmarks/bench_search.py runs/default [--recipe default] [--generations 2]

Each search runs in its own copy of the run folder (checkpoints only), so they share the eval
cache for the checkpoints and nothing else; the table gives each search's best selection
composite, its best merge, how many merges it scored and its wall time. Baselines are off here
(they do not depend on the search).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path


def run_search(run: Path, search: str, generations: int, budget: int, scoring, base) -> dict:
    from tinylm.merge.scoring import make_scorer
    from tinylm.merge.tournament import Tournament

    folder = Path(tempfile.mkdtemp(prefix=f"search-{search}-")) / "run"
    (folder / "checkpoints").mkdir(parents=True)
    for ckpt in sorted((run / "checkpoints").iterdir()):
        shutil.copytree(ckpt, folder / "checkpoints" / ckpt.name)
    scorer, settings = make_scorer(scoring)
    config = dataclasses.replace(base, generations=generations, search=search, budget=budget,
                                 baselines=False)
    started = time.perf_counter()
    tournament = Tournament(folder, config, scorer, settings, log=lambda *a: None)
    champion = tournament.run()
    merges = [e for e in tournament.entries.values() if e.generation >= 0]
    best = tournament.best_merge()
    result = {"search": search, "champion": champion.composite,
              "best_merge": best.composite if best else float("nan"),
              "best_checkpoint": tournament.best_checkpoint().composite,
              "merges": len(merges), "seconds": time.perf_counter() - started,
              "per_generation": max(sum(e.generation == g for e in merges)
                                    for g in range(tournament.generations_done)),
              "recipe": best.name if best else "-"}
    shutil.rmtree(folder.parent, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder with checkpoints/")
    parser.add_argument("--recipe", default="default",
                        help="whose [eval] scores (on the selection split) and [tournament]")
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--budget", type=int, default=0,
                        help="merges per generation for the searches; 0: as many as the grid "
                             "scored in its largest generation")
    args = parser.parse_args()
    from tinylm.pipeline.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    scoring = recipe.eval
    scoring = dataclasses.replace(scoring, settings=dataclasses.replace(scoring.settings,
                                                                        split="selection"))
    grid = run_search(args.run, "grid", args.generations, 0, scoring, recipe.tournament)
    budget = args.budget or grid["per_generation"]
    rows = [grid] + [run_search(args.run, s, args.generations, budget, scoring,
                                recipe.tournament) for s in ("cmaes", "tpe")]
    print(f"{'search':8s} {'champion':>9s} {'best merge':>11s} {'best ckpt':>10s} "
          f"{'merges':>7s} {'seconds':>8s}  best merge recipe")
    for r in rows:
        print(f"{r['search']:8s} {r['champion']:9.4f} {r['best_merge']:11.4f} "
              f"{r['best_checkpoint']:10.4f} {r['merges']:7d} {r['seconds']:8.1f}  {r['recipe']}")
    grid = rows[0]["best_merge"]
    for r in rows[1:]:
        print(f"{r['search']} vs grid, best merge: {r['best_merge'] - grid:+.4f} "
              f"({'at least as good' if r['best_merge'] <= grid else 'worse'})")


if __name__ == "__main__":
    main()
