"""Recipes: one TOML file that names everything a `tinylm run` does.

    name, description, out
    [data]        name, data_dir
    [model]       preset, tokenizer (optional path)
    [train]       any TrainConfig field, plus processes (torchrun ranks)
    [eval]        bench, limit, arc_metric, shots
    [tournament]  top_k, t_grid, generations, workers, method
    [samples]     prompts, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed

Built-in recipes live in tinylm/recipes/*.toml; a path to a .toml file works the same way.
Unknown keys are refused, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from tinylm.config import from_dict
from tinylm.errors import TinyLMError


@dataclass
class DataSection:
    name: str = "tinystories"
    data_dir: str | None = None


@dataclass
class ModelSection:
    preset: str = "glint-mini"
    tokenizer: str | None = None


@dataclass
class EvalSection:
    bench: str = "wikitext2,blimp,arc_easy"
    limit: int | None = None
    arc_metric: str = "acc"
    shots: int = 0


@dataclass
class TournamentSection:
    top_k: int = 3
    t_grid: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    generations: int = 2
    workers: int = 2
    method: str = "slerp"


@dataclass
class SamplesSection:
    prompts: list[str] = field(default_factory=lambda: ["Once upon a time", "The little dog"])
    max_new_tokens: int = 120
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 1.0
    repetition_penalty: float = 1.1
    seed: int = 0


@dataclass
class Recipe:
    name: str
    description: str = ""
    out: str = ""
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: dict = field(default_factory=dict)       # TrainConfig fields (+ "processes")
    eval: EvalSection = field(default_factory=EvalSection)
    tournament: TournamentSection = field(default_factory=TournamentSection)
    samples: SamplesSection = field(default_factory=SamplesSection)

    @property
    def processes(self) -> int:
        return int(self.train.get("processes", 1))

    @property
    def train_flags(self) -> dict:
        return {k: v for k, v in self.train.items() if k != "processes"}

    def to_dict(self) -> dict:
        return asdict(self)


SECTIONS = {"data": DataSection, "model": ModelSection, "eval": EvalSection,
            "tournament": TournamentSection, "samples": SamplesSection}


def builtin_recipes() -> list[str]:
    folder = resources.files("tinylm") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def recipe_from_dict(data: dict, where: str) -> Recipe:
    data = dict(data)
    for key, cls in SECTIONS.items():
        if key in data:
            if not isinstance(data[key], dict):
                raise TinyLMError(f"{where}: [{key}] must be a table")
            data[key] = from_dict(cls, data[key], where=f"{where} [{key}]")
    if "name" not in data:
        raise TinyLMError(f"{where}: a recipe needs a name")
    recipe = from_dict(Recipe, data, where=where)
    from tinylm.train.loop import TrainConfig

    from_dict(TrainConfig, recipe.train_flags, where=f"{where} [train]")  # validate early
    processes = recipe.train.get("processes", 1)
    if isinstance(processes, bool) or not isinstance(processes, int) or not 1 <= processes <= 64:
        raise TinyLMError(f"{where}: train.processes must be a whole number in [1, 64]")
    validate_sections(recipe, where)
    return recipe


def validate_sections(recipe: Recipe, where: str) -> None:
    """Every section's values, so `[tournament] top_k = 0` is refused before training."""
    import math

    from tinylm.merge.tournament import TournamentConfig
    from tinylm.train.config import check_types

    for key in SECTIONS:
        try:
            check_types(getattr(recipe, key))
        except ValueError as err:
            raise TinyLMError(f"{where} [{key}]: {err}") from None
    t = recipe.tournament
    try:
        TournamentConfig(top_k=t.top_k, t_grid=tuple(t.t_grid), generations=t.generations,
                         workers=t.workers, method=t.method)
    except TinyLMError as err:
        raise TinyLMError(f"{where} [tournament]: {err}") from None
    if t.method not in ("slerp", "lerp"):
        raise TinyLMError(f"{where} [tournament]: method must be slerp or lerp")
    e = recipe.eval
    if e.limit is not None and (isinstance(e.limit, bool) or not isinstance(e.limit, int)
                                or e.limit < 1):
        raise TinyLMError(f"{where} [eval]: limit must be a whole number >= 1, got {e.limit!r}")
    if e.arc_metric not in ("acc", "acc_norm") or not 0 <= e.shots <= 25:
        raise TinyLMError(f"{where} [eval]: arc_metric must be acc or acc_norm and shots in "
                          f"[0, 25]")
    s = recipe.samples
    checks = [(bool(s.prompts) and all(isinstance(p, str) and p for p in s.prompts),
               "prompts must be a non-empty list of non-empty strings"),
              (1 <= s.max_new_tokens <= 100_000, "max_new_tokens must be in [1, 100000]"),
              (math.isfinite(s.temperature) and s.temperature >= 0, "temperature must be >= 0"),
              (s.top_k >= 0, "top_k must be >= 0"),
              (0 < s.top_p <= 1, "top_p must be in (0, 1]"),
              (math.isfinite(s.repetition_penalty) and s.repetition_penalty > 0,
               "repetition_penalty must be > 0"),
              (s.seed >= 0, "seed must be >= 0")]
    for ok, message in checks:
        if not ok:
            raise TinyLMError(f"{where} [samples]: {message}")


def load_recipe(name_or_path: str | None) -> Recipe:
    name_or_path = name_or_path or "default"
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise TinyLMError(f"recipe file not found: {path}")
        text, where = _read_text(path), str(path)
    elif name_or_path in builtin_recipes():
        text = (resources.files("tinylm") / "recipes" / f"{name_or_path}.toml").read_text("utf-8")
        where = f"built-in recipe {name_or_path}"
    else:
        raise TinyLMError(f"unknown recipe {name_or_path!r}; built-in: "
                          f"{', '.join(builtin_recipes())} (or a path to a .toml file)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TinyLMError(f"{where}: not valid TOML ({err})") from None
    return recipe_from_dict(data, where)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise TinyLMError(f"{path}: not a TOML recipe (the file is not UTF-8 text)") from None
    except OSError as err:
        raise TinyLMError(f"{path}: cannot read ({err.strerror or err})") from None
