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
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tinylm.errors import TinyLMError
from tinylm.merge.recipe import Leaf, Merge, format_recipe, leaves, parse_recipe
from tinylm.tokenizers.base import write_text_atomic

Scorer = Callable[[Path], dict]  # checkpoint folder -> metrics, with "composite" (lower better)


@dataclass
class TournamentConfig:
    top_k: int = 3
    t_grid: tuple[float, ...] = (0.25, 0.5, 0.75)
    generations: int = 2
    workers: int = 2
    method: str = "slerp"

    def __post_init__(self):
        if not 2 <= self.top_k <= 16:
            raise TinyLMError(f"top_k must be in [2, 16], got {self.top_k}")
        if not self.t_grid or any(not 0 < t < 1 for t in self.t_grid):
            raise TinyLMError(f"every t of the grid must be in (0, 1), got {self.t_grid}")
        if self.generations < 1 or self.workers < 1:
            raise TinyLMError("generations and workers must be >= 1")
        self.t_grid = tuple(float(t) for t in self.t_grid)


@dataclass
class Entry:
    """One scored model of the tournament: a checkpoint or a merge."""
    name: str                    # the recipe (a checkpoint's folder name for a leaf)
    generation: int              # -1 for checkpoints
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

    def noted_merge(a, b, t):
        last_merge.update(a=a, b=b, merged=merge_fn(a, b, t))
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

    def merge(a, b, t):
        return merge_state_dicts(a, b, t, method=method, **layout)

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
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.config.workers, mp_context=context) as pool:
            futures = [pool.submit(fn, *args) for fn, args in tasks]
            for future in as_completed(futures):
                name, path, metrics = future.result()
                self._record(name, path, metrics, generation)

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

    def next_generation(self, generation: int) -> bool:
        """Build and score one generation; True if it produced a new best model."""
        # parents come from earlier generations only, so a generation resumed after a kill
        # draws the same parents as it did before (not its own half-finished merges)
        earlier = [e for e in self.ranked() if e.generation < generation]
        best_before = earlier[0]
        parents = earlier[: self.config.top_k]
        recipes = []
        for a, b in itertools.combinations(parents, 2):  # `a` ranks higher: it is the left
            for t in self.config.t_grid:
                tree = Merge(_tree(a.name), _tree(b.name), t, generation)
                recipes.append(format_recipe(tree, compact=True))
        todo = [(_merge_and_score, (r, str(self.checkpoints_dir), str(self.merges_dir),
                                    self.config.method, self.scorer))
                for r in recipes if r not in self.entries]
        self.log(f"generation {generation}: {len(recipes)} merges of the top {len(parents)} "
                 f"({len(recipes) - len(todo)} already scored)")
        self._run_tasks(todo, generation)
        new = [self.entries[r] for r in recipes]
        return min(e.composite for e in new) < best_before.composite

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
        champion = self.ranked()[0]
        self.log(f"champion: {champion.name} (composite {champion.composite:.4f}); "
                 f"{self.stopped_because}; {time.perf_counter() - started:.1f}s")
        return champion

    def best_checkpoint(self) -> Entry:
        return [e for e in self.ranked() if e.generation < 0][0]


def _tree(name: str):
    return parse_recipe(name)


# --------------------------------------------------------------------------- the champion

def save_champion(tournament: Tournament, out: Path | None = None) -> Path:
    """Write the champion as an ordinary checkpoint with its recipe, lineage and scores."""
    from tinylm.train.checkpoint import load_checkpoint, save_checkpoint

    champion, best = tournament.ranked()[0], tournament.best_checkpoint()
    out = out or tournament.run_dir / "champion"
    source = load_checkpoint(champion.path)
    lineage = source.meta.get("lineage", {"leaves": [champion.name], "parents": []})
    meta = {"step": source.meta.get("step"), "tokens_seen": _tokens_seen(tournament, lineage),
            "recipe": champion.name, "lineage": lineage, "scores": champion.metrics,
            "best_checkpoint": {"name": best.name, "scores": best.metrics},
            "champion_is_merge": champion.generation >= 0,
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
