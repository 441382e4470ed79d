"""The checkpoint tournament: score every checkpoint, SLERP the best, score every merge, repeat.

This is the loop of the Glint/Blink model cards as a tool:

1. Every checkpoint of a run is scored (the scorer caches by model hash, so nothing is scored
   twice). Lower composite is better.
2. A generation takes the top-K of everything scored so far, checkpoints and earlier merges
   alike, and builds every pair at every t of the grid. A pair's better-scoring member is the
   left parent (t = 0 end), so `A+B@t0.25` stays close to the stronger model.
3. Every merge is scored. The tournament stops after G generations, or earlier when a
   generation brings no gain (its best merge does not beat the best model before it).
4. The champion, the best model overall (a plain checkpoint when no merge wins, which is a
   valid and honestly reported outcome), is saved as an ordinary checkpoint whose metadata
   carries its recipe, lineage and scores.

Merges are named by their recipe (see `recipe.py`), so every merge can be rebuilt from its name
alone with `tinylm merge --recipe`. Work runs in worker processes that each build one merge and
score it, so merging overlaps with scoring. All progress lives in `tournament/state.json`,
rewritten atomically after every scored model: a killed tournament started again skips what is
done and, since merges are deterministic, rebuilds any half-done merge to the same bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tinylm.errors import TinyLMError
from tinylm.merge.recipe import Leaf, Merge, format_recipe, leaves, parse_recipe
from tinylm.io import write_text_atomic

Scorer = Callable[[Path], dict]  # checkpoint folder -> metrics, with "composite" (lower better)


SEARCHES = ("grid", "cmaes", "tpe")
# Per-metric seeds of the pool ("the best checkpoints per benchmark", the Glint card), each with
# the direction that is better.
SEED_METRICS = (("wikitext2_ce", "lower"), ("blimp_acc", "higher"), ("arc_easy_acc", "higher"),
                ("gsm8k_chat_ce", "lower"))  # the last only where scored (--objective instruct)
CHECKPOINT, BASELINE = -1, -2  # Entry.generation of a plain checkpoint and of a baseline


@dataclass
class TournamentConfig:
    top_k: int = 3
    t_grid: tuple[float, ...] = (0.25, 0.5, 0.75)
    generations: int = 2
    workers: int = 2
    method: str = "slerp"
    search: str = "grid"
    """grid: every pair of the pool at every t of the grid; cmaes | tpe: an Optuna search over
    the per-group t vector of the pool's best pair, `budget` merges a generation."""
    budget: int = 0
    """Merges per generation for cmaes/tpe; 0 = as many as the grid would build."""
    per_metric_seeds: bool = True
    """Seed the pool with the best model on each metric besides the top_k by composite."""
    baselines: bool = True
    """Also score a uniform soup and a greedy soup of the pool, LAWA and EMA (when trained)."""
    lawa_k: int = 3
    """LAWA: average of the last k checkpoints."""
    seed: int = 0
    """Seed of the search's sampler."""

    def __post_init__(self):
        if not 2 <= self.top_k <= 16:
            raise TinyLMError(f"top_k must be in [2, 16], got {self.top_k}")
        if not self.t_grid or any(isinstance(t, bool) or not isinstance(t, (int, float))
                                  or not 0 < t < 1 for t in self.t_grid):
            raise TinyLMError(f"every t of the grid must be in (0, 1), got {self.t_grid}")
        for name in ("top_k", "generations", "workers", "budget", "lawa_k", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TinyLMError(f"{name} must be a whole number, got {value!r}")
        if not 1 <= self.generations <= 100 or not 1 <= self.workers <= 64:
            raise TinyLMError("generations must be in [1, 100] and workers in [1, 64]")
        if self.search not in SEARCHES:
            raise TinyLMError(f"search must be one of {', '.join(SEARCHES)}, got "
                              f"{self.search!r}")
        if not 0 <= self.budget <= 10_000 or not 2 <= self.lawa_k <= 1000:
            raise TinyLMError("budget must be in [0, 10000] and lawa_k in [2, 1000]")
        self.t_grid = tuple(float(t) for t in self.t_grid)

    @property
    def merges_per_generation(self) -> int:
        """What the grid builds from a pool of top_k (the budget a search gets by default)."""
        return self.top_k * (self.top_k - 1) // 2 * len(self.t_grid)


@dataclass
class Entry:
    """One scored model of the tournament: a checkpoint or a merge."""
    name: str                    # the recipe (a checkpoint's folder name for a leaf)
    generation: int              # CHECKPOINT (-1), BASELINE (-2), or the merge's generation
    path: str                    # its checkpoint folder
    metrics: dict = field(default_factory=dict)
    step: int | None = None

    @property
    def composite(self) -> float:
        return float(self.metrics["composite"])


# --------------------------------------------------------------------------- building merges

def merge_folder_name(recipe: str) -> str:
    """Recipes can be longer than a file name may be; folders get a short stable id."""
    return "merge_" + hashlib.sha256(recipe.encode()).hexdigest()[:16]


def build_merge(recipe: str, checkpoints_dir: Path, out: Path, method: str = "slerp") -> Path:
    """Rebuild the merge named by `recipe` from the run's checkpoints; save it as a
    weights-only checkpoint at `out` (returned as is if it already exists)."""
    from tinylm.merge.recipe import evaluate_recipe
    from tinylm.train.checkpoint import load_checkpoint, read_meta, save_checkpoint

    if (out / "meta.json").is_file():
        return out
    tree = parse_recipe(recipe)
    loaded = {}

    def load(name: str):
        if name not in loaded:
            loaded[name] = load_checkpoint(checkpoints_dir / name)
        return loaded[name].model_state

    first = load(leaves(tree)[0])
    base = loaded[leaves(tree)[0]]
    merge_fn = family_merge_fn(base.meta["family"], base.meta["model_config"], method)
    last_merge = {}  # the recipe's root merge is the last call: its parents and result

    def noted_merge(a, b, t, t_by_group=None):
        last_merge.update(a=a, b=b, merged=merge_fn(a, b, t, t_by_group))
        return last_merge["merged"]

    for name in leaves(tree)[1:]:
        load(name)
        other = loaded[name]
        if (other.meta["family"], other.meta["model_config"]) != (base.meta["family"],
                                                                   base.meta["model_config"]):
            raise TinyLMError(f"cannot merge {leaves(tree)[0]} with {name}: different "
                              f"architectures")
        if other.tokenizer.content_hash() != base.tokenizer.content_hash():
            raise TinyLMError(f"cannot merge {leaves(tree)[0]} with {name}: different tokenizers")
    state = first if isinstance(tree, Leaf) else evaluate_recipe(tree, load, noted_merge)
    meta = {"step": None, "tokens_seen": None, "recipe": recipe,
            "lineage": {"leaves": leaves(tree), "parents": _parents(tree)},
            "merge_method": method}
    _add_merge_notes(meta, base.meta, last_merge)
    save_checkpoint(out, family=base.meta["family"], model_config=base.meta["model_config"],
                    model_state=state, tokenizer=base.tokenizer, extra_meta=meta)
    read_meta(out)
    return out


def _add_merge_notes(meta: dict, base_meta: dict, last_merge: dict) -> None:
    """The family record's notes on the root merge (A, B = its two parents), if it has any."""
    from tinylm.merge.cli import format_notes
    from tinylm.models import get_family

    record = get_family(base_meta["family"])
    if record.merge_notes is None or not last_merge:
        return
    meta["merge_notes"] = notes = record.merge_notes(
        last_merge["a"], last_merge["b"], last_merge["merged"],
        record.config_from(base_meta["model_config"]))
    print(f"merge notes for {meta['recipe']}: {format_notes(notes)}", flush=True)


def _parents(tree) -> list:
    if isinstance(tree, Leaf):
        return []
    return [format_recipe(tree.left, compact=True), format_recipe(tree.right, compact=True),
            tree.t]


def family_merge_fn(family: str, model_config: dict, method: str):
    """SLERP per tensor, with each fused projection (wqkv, w13) split into the parts mergekit
    would see, so every part gets its own angle."""
    from tinylm.merge.slerp import family_layout, merge_state_dicts
    from tinylm.models import get_family

    record = get_family(family)
    layout = family_layout(record, record.config_from(model_config))

    def merge(a, b, t, t_by_group=None):
        return merge_state_dicts(a, b, t, method=method, t_by_group=t_by_group, **layout)

    return merge


def _merge_and_score(recipe: str, checkpoints_dir: str, merges_dir: str, method: str,
                     scorer: Scorer) -> tuple[str, str, dict]:
    """Worker task: build one merge, then score it."""
    path = build_merge(recipe, Path(checkpoints_dir), Path(merges_dir) / merge_folder_name(recipe),
                       method)
    return recipe, str(path), scorer(path)


def _score_only(name: str, path: str, scorer: Scorer) -> tuple[str, str, dict]:
    return name, path, scorer(Path(path))


# --------------------------------------------------------------------------- the tournament

class Tournament:
    def __init__(self, run_dir: Path, config: TournamentConfig, scorer: Scorer,
                 scorer_settings: dict | None = None, log=print):
        self.run_dir = Path(run_dir)
        self.checkpoints_dir = self.run_dir / "checkpoints"
        self.dir = self.run_dir / "tournament"
        self.merges_dir = self.dir / "merges"
        self.config, self.scorer, self.log = config, scorer, log
        self.settings = {"tournament": asdict(config), "scorer": scorer_settings or {}}
        self.entries: dict[str, Entry] = {}
        self.generations_done = 0
        self.stopped_because = None
        self._load_state()

    # ------------------------------------------------------------------ state

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def _load_state(self) -> None:
        if not self.state_file.is_file():
            return
        try:
            state = json.loads(self.state_file.read_text())
        except ValueError as err:
            raise TinyLMError(f"{self.state_file}: corrupt tournament state ({err})") from None
        if state.get("settings") != json.loads(json.dumps(self.settings)):
            self.log("tournament settings changed since the last run: starting the bracket "
                     "again (scores stay cached)")
            return
        self.entries = {e["name"]: Entry(**e) for e in state["entries"]}
        self.generations_done = state["generations_done"]
        self.stopped_because = state.get("stopped_because")

    def _save_state(self) -> None:
        state = {"settings": self.settings, "generations_done": self.generations_done,
                 "stopped_because": self.stopped_because,
                 "entries": [asdict(e) for e in self.entries.values()]}
        write_text_atomic(self.state_file, json.dumps(state, indent=1))

    # ------------------------------------------------------------------ running

    def ranked(self) -> list[Entry]:
        return sorted(self.entries.values(), key=lambda e: (e.composite, e.generation, e.name))

    def _run_tasks(self, tasks: list[tuple[Callable, tuple]], generation: int) -> None:
        """Run (function, args) tasks in worker processes; record each result as it comes."""
        if not tasks:
            return
        if self.config.workers == 1:
            results = (fn(*args) for fn, args in tasks)
            for name, path, metrics in results:
                self._record(name, path, metrics, generation)
            return
        from tinylm.procs import pool_initializer

        context = multiprocessing.get_context("spawn")
        # workers die with us, even by kill -9: orphans would race a restarted tournament
        with ProcessPoolExecutor(self.config.workers, mp_context=context,
                                 initializer=pool_initializer,
                                 initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(fn, *args) for fn, args in tasks]
            try:
                for future in as_completed(futures):
                    name, path, metrics = future.result()
                    self._record(name, path, metrics, generation)
            except BrokenProcessPool:
                raise TinyLMError("a tournament worker process died (out of memory?); run "
                                  "the command again: every finished merge and score is "
                                  "kept") from None

    def _record(self, name: str, path: str, metrics: dict, generation: int) -> None:
        if "composite" not in metrics:
            raise TinyLMError(f"the scorer returned no composite for {name}")
        from tinylm.train.checkpoint import read_meta

        step = read_meta(path).get("step")
        self.entries[name] = Entry(name, generation, path, metrics, step)
        self._save_state()
        self.log(f"  scored {name}: composite {metrics['composite']:.4f}")

    def score_checkpoints(self) -> None:
        from tinylm.train.checkpoint import list_checkpoints

        found = list_checkpoints(self.checkpoints_dir)
        if len(found) < 2:
            raise TinyLMError(f"{self.checkpoints_dir}: a tournament needs at least 2 "
                              f"checkpoints, found {len(found)}")
        todo = [(_score_only, (p.name, str(p), self.scorer)) for p in found
                if p.name not in self.entries]
        if todo:
            self.log(f"scoring {len(todo)} checkpoint(s)")
        self._run_tasks(todo, generation=-1)

    def pool(self, generation: int) -> list[Entry]:
        """The parents of a generation, best first: the top_k of the checkpoints and earlier
        merges by composite, plus (per_metric_seeds) the best of them on each metric. Only
        earlier generations count, so a generation resumed after a kill draws the same pool."""
        earlier = [e for e in self.ranked() if CHECKPOINT <= e.generation < generation]
        chosen = earlier[: self.config.top_k]
        if self.config.per_metric_seeds:
            for key, better in SEED_METRICS:
                scored = [e for e in earlier if key in e.metrics]
                if scored:
                    pick = (min if better == "lower" else max)(scored,
                                                               key=lambda e: e.metrics[key])
                    if pick not in chosen:
                        chosen.append(pick)
        return sorted(chosen, key=lambda e: (e.composite, e.generation, e.name))

    def next_generation(self, generation: int) -> bool:
        """Build and score one generation; True if it produced a new best model."""
        parents = self.pool(generation)
        best_before = parents[0]
        if self.config.search == "grid":
            recipes = self._grid(parents, generation)
        else:
            recipes = self._search(parents, generation)
        new = [self.entries[r] for r in recipes]
        return min(e.composite for e in new) < best_before.composite

    def _grid(self, parents: list[Entry], generation: int) -> list[str]:
        recipes = []
        for a, b in itertools.combinations(parents, 2):  # `a` ranks higher: it is the left
            for t in self.config.t_grid:
                tree = Merge(_tree(a.name), _tree(b.name), t, generation)
                recipes.append(format_recipe(tree, compact=True))
        self._score_recipes(recipes, generation,
                            f"{len(recipes)} merges of a pool of {len(parents)}")
        return recipes

    def _score_recipes(self, recipes: list[str], generation: int, what: str) -> None:
        todo = [(_merge_and_score, (r, str(self.checkpoints_dir), str(self.merges_dir),
                                    self.config.method, self.scorer))
                for r in dict.fromkeys(recipes) if r not in self.entries]
        self.log(f"generation {generation}: {what} ({len(recipes) - len(todo)} already scored)")
        self._run_tasks(todo, generation)

    def _search(self, parents: list[Entry], generation: int) -> list[str]:
        """An Optuna search (CMA-ES or TPE, seeded) over one t per parameter group for the
        pool's best pair: `budget` merges, asked `workers` at a time. Merges scored before
        (a resumed run) are told to the study first, so nothing is scored twice."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        a, b = parents[0], parents[1]
        groups = self._groups(a)
        space = {g: optuna.distributions.FloatDistribution(0.0, 1.0, step=0.01) for g in groups}
        seed = self.config.seed + generation
        sampler = (optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
                   if self.config.search == "cmaes" else optuna.samplers.TPESampler(seed=seed))
        study = optuna.create_study(direction="minimize", sampler=sampler)
        budget = self.config.budget or self.config.merges_per_generation
        recipes: list[str] = []
        while len(recipes) < budget:
            trials = [study.ask(space) for _ in range(min(self.config.workers,
                                                          budget - len(recipes)))]
            batch = [self._group_recipe(a, b, trial.params, generation) for trial in trials]
            self._score_recipes(batch, generation, f"search trials {len(recipes) + 1}-"
                                f"{len(recipes) + len(batch)} of {budget} over the groups of "
                                f"{a.name} + {b.name}")
            for trial, recipe in zip(trials, batch):
                study.tell(trial, self.entries[recipe].composite)
            recipes += batch
        return recipes

    def _groups(self, entry: Entry) -> list[str]:
        """The parameter groups present in a model, from its family record."""
        from tinylm.models import get_family
        from tinylm.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(entry.path)
        record = get_family(ckpt.meta["family"])
        return sorted({record.group_of(name) for name in ckpt.model_state})

    @staticmethod
    def _group_recipe(a: Entry, b: Entry, params: dict, generation: int) -> str:
        groups = tuple((g, round(float(t), 2)) for g, t in params.items())
        tree = Merge(_tree(a.name), _tree(b.name), 0.5, generation, groups)
        return format_recipe(tree, compact=True)

    def run(self) -> Entry:
        started = time.perf_counter()
        self.score_checkpoints()
        while self.generations_done < self.config.generations and self.stopped_because is None:
            generation = self.generations_done
            improved = self.next_generation(generation)
            self.generations_done += 1
            if not improved:
                self.stopped_because = f"generation {generation} brought no gain"
            self._save_state()
        if self.stopped_because is None:
            self.stopped_because = f"{self.config.generations} generation(s) done"
            self._save_state()
        if self.config.baselines:
            self.score_baselines()
        champion = self.ranked()[0]
        self.log(f"champion: {champion.name} (composite {champion.composite:.4f}); "
                 f"{self.stopped_because}; {time.perf_counter() - started:.1f}s")
        return champion

    def best_checkpoint(self) -> Entry:
        return [e for e in self.ranked() if e.generation == CHECKPOINT][0]

    def best_merge(self) -> Entry | None:
        merges = [e for e in self.ranked() if e.generation >= 0]
        return merges[0] if merges else None

    def baselines(self) -> list[Entry]:
        return [e for e in self.ranked() if e.generation == BASELINE]

    # ------------------------------------------------------------------ baselines

    def score_baselines(self) -> None:
        """Simple averaging, beside SLERP: uniform and greedy soups of the generation-0 pool's
        checkpoints (Wortsman et al. 2022), LAWA over the last lawa_k checkpoints (Kaddour
        2022), and the EMA weights the last checkpoint carries when training kept them. Each is
        saved under tournament/baselines/ and competes for champion like any merge."""
        from tinylm.merge.soup import greedy_soup, uniform_soup
        from tinylm.train.checkpoint import list_checkpoints, load_checkpoint

        from tinylm.models import get_family

        pool = [e for e in self.pool(0) if e.generation == CHECKPOINT]
        loaded = {e.name: load_checkpoint(e.path) for e in pool}
        states = {name: ckpt.model_state for name, ckpt in loaded.items()}
        # Frozen parts (a BLT's patcher) are copied, never averaged: see merge/soup.py.
        frozen = get_family(next(iter(loaded.values())).meta["family"]).frozen_prefixes
        self._baseline("soup_uniform", lambda: uniform_soup(list(states.values()), frozen),
                       {"kind": "uniform soup", "members": list(states)})
        if "soup_greedy" not in self.entries:
            known = {id(states[e.name]): e.composite for e in pool}  # scored already
            trials = iter(range(len(states)))

            def score(sd) -> float:
                if id(sd) in known:
                    return known[id(sd)]
                return self._score_state(f"greedy_trial_{next(trials)}", sd, {"kind": "trial"})

            state, kept = greedy_soup([(e.name, states[e.name]) for e in pool], score,
                                      frozen=frozen)
            self._baseline("soup_greedy", lambda: state,
                           {"kind": "greedy soup", "members": kept})
        last = list_checkpoints(self.checkpoints_dir)[-self.config.lawa_k:]
        self._baseline(f"lawa_{len(last)}", lambda: uniform_soup(
            [load_checkpoint(p).model_state for p in last], frozen),
            {"kind": "LAWA", "members": [p.name for p in last]})
        newest = load_checkpoint(last[-1], with_train_state=True)
        ema = {k[4:]: v for k, v in (newest.train_state or {}).items() if k.startswith("ema.")}
        if ema:
            self._baseline(f"ema_{last[-1].name}", lambda: ema,
                           {"kind": "EMA", "members": [last[-1].name]})
        self._save_state()

    def _baseline(self, name: str, build, about: dict) -> None:
        if name in self.entries:
            return
        path, metrics = self._save_and_score(name, build(), about)
        self._record(name, str(path), metrics, BASELINE)

    def _score_state(self, name: str, state: dict, about: dict) -> float:
        return self._save_and_score(name, state, about)[1]["composite"]

    def _save_and_score(self, name: str, state: dict, about: dict) -> tuple[Path, dict]:
        from tinylm.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

        template = load_checkpoint(list_checkpoints(self.checkpoints_dir)[-1])
        path = self.dir / "baselines" / name
        save_checkpoint(path, family=template.meta["family"],
                        model_config=template.meta["model_config"], model_state=state,
                        tokenizer=template.tokenizer,
                        extra_meta={"step": None, "tokens_seen": None, "baseline": about})
        return path, self.scorer(path)


def _tree(name: str):
    return parse_recipe(name)


# --------------------------------------------------------------------------- the champion

def save_champion(tournament: Tournament, out: Path | None = None) -> Path:
    """Write the champion as an ordinary checkpoint with its recipe, lineage and scores."""
    from tinylm.train.checkpoint import load_checkpoint, save_checkpoint

    champion, best = tournament.ranked()[0], tournament.best_checkpoint()
    out = out or tournament.run_dir / "champion"
    source = load_checkpoint(champion.path)
    members = source.meta.get("baseline", {}).get("members")  # a soup, LAWA or EMA
    lineage = source.meta.get("lineage", {"leaves": members or [champion.name], "parents": []})
    meta = {"step": source.meta.get("step"), "tokens_seen": _tokens_seen(tournament, lineage),
            "recipe": champion.name, "lineage": lineage, "scores": champion.metrics,
            "best_checkpoint": {"name": best.name, "scores": best.metrics},
            "champion_is_merge": champion.generation >= 0,
            "champion_is_baseline": champion.generation == BASELINE,
            "tournament": tournament.settings, "metrics": champion.metrics}
    return save_checkpoint(out, family=source.meta["family"],
                           model_config=source.meta["model_config"],
                           model_state=source.model_state, tokenizer=source.tokenizer,
                           extra_meta=meta)


def _tokens_seen(tournament: Tournament, lineage: dict) -> int | None:
    """A merge has seen as many tokens as the latest checkpoint it is made from."""
    from tinylm.train.checkpoint import read_meta

    seen = [read_meta(tournament.checkpoints_dir / leaf).get("tokens_seen")
            for leaf in lineage.get("leaves", [])]
    seen = [s for s in seen if s is not None]
    return max(seen) if seen else None
