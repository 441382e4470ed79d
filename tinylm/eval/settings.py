"""The evaluation settings: one dataclass, recorded with every result.

Each benchmark names the fields that change its scores (`Benchmark.settings`); only those, plus
`limit`, enter its cache key, so changing the ARC shot count never rescores WikiText-2.
`arc_metric` changes no score at all, only which ARC number feeds the composite.

`split` says which items are scored: `selection` (WikiText-2 validation, ARC validation, the
even-hash half of each BLiMP paradigm) is what a pipeline may choose models on; `report`
(WikiText-2 test, ARC test, the odd half of BLiMP) is what it may only report; `all` is today's
test sets (every BLiMP pair), the numbers other papers and lm-eval give.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from tinylm.errors import TinyLMError

COMPOSITE_BENCHES = ("wikitext2", "blimp", "arc_easy")
DEFAULT_BENCHES = ",".join(COMPOSITE_BENCHES)  # the one place the default benchmark list lives
DEFAULT_TIMEOUT = 3600.0  # seconds per benchmark process
ARC_METRICS = ("acc", "acc_norm", "acc_bytes")
TIE_RULES = ("half", "correct", "wrong")
WIKITEXT_MODES = ("document", "file")
SPLITS = ("all", "selection", "report")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class EvalSettings:
    stride: int = field(default=0, metadata=_help(
        "WikiText-2: tokens each sliding window moves on; 0 = half the model's context, "
        "the context itself = lm-eval's disjoint windows"))
    wikitext_mode: str = field(default="document", metadata=_help(
        "WikiText-2: document (each article on its own, EOS-prefixed, as lm-eval) | file "
        "(the whole test file as one stream)"))
    detokenize: bool = field(default=True, metadata=_help(
        "WikiText-2: score the detokenised page as lm-eval does (words and bytes are always "
        "counted on the raw page)"))
    shots: int = field(default=0, metadata=_help(
        "ARC: exemplars from the train split, '\\n\\n'-delimited"))
    fewshot_seed: int = field(default=1234, metadata=_help(
        "ARC: seed of the exemplar draw (combined with each question's id)"))
    arc_metric: str = field(default="acc", metadata=_help(
        "ARC number feeding the composite: acc | acc_norm (per character, lm-eval) | "
        "acc_bytes (per UTF-8 byte)"))
    blimp_ties: str = field(default="half", metadata=_help(
        "BLiMP: how an exact tie counts in acc: half | correct (lm-eval's argmax) | wrong"))
    split: str = field(default="all", metadata=_help(
        "items scored: all (the test sets, every BLiMP pair) | selection (WikiText-2 and ARC "
        "validation, half of each BLiMP paradigm: choose models on this) | report (WikiText-2 "
        "and ARC test, the other BLiMP half: report on this)"))

    def __post_init__(self):
        self.stride, self.shots = int(self.stride), int(self.shots)
        if self.stride < 0:
            raise TinyLMError(f"stride must be >= 0 (0 = half the context), got {self.stride}")
        if self.shots < 0:
            raise TinyLMError(f"shots must be >= 0, got {self.shots}")
        for name, valid in (("wikitext_mode", WIKITEXT_MODES), ("arc_metric", ARC_METRICS),
                            ("blimp_ties", TIE_RULES), ("split", SPLITS)):
            if getattr(self, name) not in valid:
                raise TinyLMError(f"{name} must be one of {', '.join(valid)}, got "
                                  f"{getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def subset(self, names) -> dict:
        return {n: getattr(self, n) for n in names}

    @classmethod
    def from_dict(cls, data: dict | None) -> EvalSettings:
        """From a flat dict; the older spellings `seed` and `mode` are understood."""
        data = dict(data or {})
        renames = {"seed": "fewshot_seed", "mode": "wikitext_mode"}
        for old, new in renames.items():
            if old in data:
                data.setdefault(new, data.pop(old))
        if data.get("stride") is None:
            data.pop("stride", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TinyLMError(f"unknown eval setting(s) {unknown}; valid: {sorted(known)}")
        return cls(**data)


@dataclass
class ScoringConfig:
    """What every model of a tournament or a `tinylm run` is scored with: the benchmarks, an
    optional item limit, and the EvalSettings. A recipe's [eval] table and the tournament's
    flags are flat; `from_flat` sorts their keys into this."""

    bench: str = DEFAULT_BENCHES
    limit: int | None = None
    settings: EvalSettings = field(default_factory=EvalSettings)

    def __post_init__(self):
        if isinstance(self.settings, dict):
            self.settings = EvalSettings.from_dict(self.settings)
        if self.limit is not None and (isinstance(self.limit, bool) or int(self.limit) < 1
                                       or int(self.limit) != self.limit):
            raise TinyLMError(f"limit must be a whole number >= 1, got {self.limit}")

    @classmethod
    def from_flat(cls, data: dict | None, where: str = "eval settings") -> ScoringConfig:
        data = dict(data or {})
        own = {k: data.pop(k) for k in ("bench", "limit") if k in data}
        try:
            return cls(settings=EvalSettings.from_dict(data), **own)
        except TinyLMError as err:
            raise TinyLMError(f"{where}: {err}") from None

    def to_flat(self) -> dict:
        return {"bench": self.bench, "limit": self.limit, **self.settings.to_dict()}
