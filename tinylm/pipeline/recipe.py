"""Recipes: one TOML file that names everything a `tinylm run` does.

    name, description, hardware, time, out
    [data]        name (a data set, or a mixture "c4:0.7,fineweb-edu-stream:0.3"), data_dir
    [model]       preset, tokenizer (optional path), config (model fields changed from the
                  preset, e.g. {context_len = 4096})
    [train]       any TrainConfig field, plus processes (torchrun ranks)
    [control]     TrainConfig fields that differ for a same-compute control run (e.g. a
                  decay schedule), trained beside the main run and reported next to the
                  champion; absent: no control run
    [eval]        what selection scores with: bench, limit, any EvalSettings field
    [report]      what the held-out report scores with (same keys; absent: as [eval])
    [tournament]  any TournamentConfig field (top_k, t_grid, generations, workers, method)
    [samples]     prompts, max_new_tokens, seed, and any SamplingConfig field

Built-in recipes live in tinylm/recipes/*.toml; a path to a .toml file works the same way.
Unknown keys are refused, so a typo cannot silently fall back to a default. The sections hold
the real settings dataclasses (`ScoringConfig`/`EvalSettings`, `TournamentConfig`,
`SamplingConfig`), so their defaults and checks are declared once, and a bad value is caught
when the recipe is read, before any training.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from tinylm.config import from_dict
from tinylm.errors import TinyLMError
from tinylm.eval.settings import ScoringConfig
from tinylm.infer.settings import SamplingConfig
from tinylm.merge.tournament import TournamentConfig


@dataclass
class DataSection:
    name: str = "tinystories"
    data_dir: str | None = None


@dataclass
class ModelSection:
    preset: str = "glint-mini"
    tokenizer: str | None = None
    config: dict = field(default_factory=dict)  # model config fields that differ from the preset


@dataclass
class SamplesSection:
    """What the champion writes for the card: prompts, length, seed, and the sampling."""
    prompts: list[str] = field(default_factory=lambda: ["Once upon a time", "The little dog"])
    max_new_tokens: int = 120
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @classmethod
    def from_flat(cls, data: dict, where: str) -> SamplesSection:
        data = dict(data)
        own = {k: data.pop(k) for k in ("prompts", "max_new_tokens", "seed") if k in data}
        sampling = from_dict(SamplingConfig, data, where=where)
        section = from_dict(cls, {**own, "sampling": sampling}, where=where)
        if section.max_new_tokens < 1 or not section.prompts:
            raise TinyLMError(f"{where}: needs prompts and max_new_tokens >= 1")
        return section


@dataclass
class Recipe:
    name: str
    description: str = ""
    hardware: str = "any CPU"                       # what the recipe is sized for
    time: str = ""                                  # an estimate on that hardware
    out: str = ""
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: dict = field(default_factory=dict)       # TrainConfig fields (+ "processes")
    control: dict = field(default_factory=dict)     # TrainConfig overrides of the control run
    eval: ScoringConfig = field(default_factory=ScoringConfig)
    report: ScoringConfig | None = None             # None: the same as eval (other split)
    tournament: TournamentConfig = field(default_factory=TournamentConfig)
    samples: SamplesSection = field(default_factory=SamplesSection)

    @property
    def processes(self) -> int:
        return int(self.train.get("processes", 1))

    @property
    def train_flags(self) -> dict:
        return {k: v for k, v in self.train.items() if k != "processes"}

    def to_dict(self) -> dict:
        return asdict(self)


def _tournament(data: dict, where: str) -> TournamentConfig:
    return from_dict(TournamentConfig, data, where=where)


# [section] -> how its table becomes the section's dataclass
SECTIONS = {"data": lambda d, where: from_dict(DataSection, d, where=where),
            "model": lambda d, where: from_dict(ModelSection, d, where=where),
            "eval": ScoringConfig.from_flat, "report": ScoringConfig.from_flat,
            "tournament": _tournament,
            "samples": SamplesSection.from_flat}


def builtin_recipes() -> list[str]:
    folder = resources.files("tinylm") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def recipe_from_dict(data: dict, where: str) -> Recipe:
    data = dict(data)
    for key, parse in SECTIONS.items():
        if key in data:
            if not isinstance(data[key], dict):
                raise TinyLMError(f"{where}: [{key}] must be a table")
            data[key] = parse(data[key], f"{where} [{key}]")
    if "name" not in data:
        raise TinyLMError(f"{where}: a recipe needs a name")
    recipe = from_dict(Recipe, data, where=where)
    from tinylm.train.config import TrainConfig

    from_dict(TrainConfig, recipe.train_flags, where=f"{where} [train]")  # validate early
    if recipe.control:
        from_dict(TrainConfig, {**recipe.train_flags, **recipe.control},
                  where=f"{where} [control]")
    processes = recipe.train.get("processes", 1)
    if isinstance(processes, bool) or not isinstance(processes, int) or not 1 <= processes <= 64:
        raise TinyLMError(f"{where}: train.processes must be a whole number in [1, 64]")
    validate_sections(recipe, where)
    return recipe


def validate_sections(recipe: Recipe, where: str) -> None:
    """Every section's value types (no 3.7 for an int, no NaN), and what the sections' own
    dataclasses do not check, so a bad recipe is refused before training. TournamentConfig,
    EvalSettings and SamplingConfig validate their own ranges when the recipe is read."""
    from tinylm.train.config import check_types

    parts = {"data": [recipe.data], "model": [recipe.model],
             "eval": [recipe.eval, recipe.eval.settings],
             "report": [recipe.report, recipe.report.settings] if recipe.report else [],
             "tournament": [recipe.tournament],
             "samples": [recipe.samples, recipe.samples.sampling]}
    for key, sections in parts.items():
        try:
            for section in sections:
                check_types(section)
        except ValueError as err:
            raise TinyLMError(f"{where} [{key}]: {err}") from None
    e = recipe.eval.settings
    if e.arc_metric not in ("acc", "acc_norm") or not 0 <= e.shots <= 25:
        raise TinyLMError(f"{where} [eval]: arc_metric must be acc or acc_norm and shots in "
                          f"[0, 25]")
    s = recipe.samples
    checks = [(bool(s.prompts) and all(isinstance(p, str) and p for p in s.prompts),
               "prompts must be a non-empty list of non-empty strings"),
              (1 <= s.max_new_tokens <= 100_000, "max_new_tokens must be in [1, 100000]"),
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
