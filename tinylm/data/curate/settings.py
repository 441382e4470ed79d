"""The settings of the detectors and the audit (`tinylm data dedup | decontaminate |
audit`), in a module of their own: the command line builds its flags from them without
importing numpy, datasketch or detect-secrets (`tinylm --help` stays instant). What each
setting does is in the module that uses it: dedup.py, contamination.py, mismatch.py, audit.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinylm.errors import TinyLMError

NGRAM = 13  # lm-eval's decontamination n-gram (lm_eval/decontamination/janitor.py)


@dataclass(frozen=True)
class DedupConfig:
    threshold: float = 0.7
    """Estimated Jaccard similarity of the shingle sets at or above which rows are near
    duplicates (text-dedup's default and about datatrove's 14x8-band curve)."""
    num_perm: int = 128
    """MinHash permutations (signature length)."""
    shingle_words: int = 5
    """Words per shingle."""
    seed: int = 1
    recall_weight: float = 0.9
    """How datasketch weighs false negatives against false positives when it picks bands."""
    examples: int = 5
    """Clusters listed with examples in the report."""

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise TinyLMError(f"--threshold must be in (0, 1], not {self.threshold}")
        if self.num_perm < 16 or self.shingle_words < 1:
            raise TinyLMError("--num-perm must be at least 16 and --shingle-words at least 1")


@dataclass(frozen=True)
class ContaminationConfig:
    ngram: int = NGRAM
    """n of the word n-grams (lm-eval's decontamination uses 13)."""
    min_short_words: int = 4
    """Benchmark items shorter than `ngram` words are matched as whole sentences when they
    have at least this many words."""


@dataclass(frozen=True)
class ProfileConfig:
    margin: float = 0.05
    """How much closer (cosine) another source's profile must be to flag a row."""
    min_rows: int = 20
    """A source with fewer rows has no profile (too few to say what it looks like)."""


@dataclass(frozen=True)
class AuditThresholds:
    """What fails an audit (a figure above its maximum). Rates are fractions of all rows."""
    max_exact_duplicate_rate: float = 0.01
    max_near_duplicate_rate: float = 0.02
    max_contaminated_rows: int = 0
    max_secret_rows: int = 0
    max_private_rows: int = 0
    max_clone_rows: int = 0
    max_relabelled_rows: int = 0
    max_pii_row_rate: float = 0.05
    """Rows with an email or phone number: web text has some (C4 sample: 4%)."""
    max_profile_mismatch_rate: float = 1.0
    """Statistical evidence only (see mismatch.py), so it fails nothing by default."""


@dataclass(frozen=True)
class AuditConfig:
    dedup: DedupConfig = field(default_factory=DedupConfig)
    contamination: ContaminationConfig = field(default_factory=ContaminationConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    thresholds: AuditThresholds = field(default_factory=AuditThresholds)
    examples: int = 5
    max_listed: int = 100_000
    """Flagged row ids listed per finding kind in audit.json (the counts are always exact)."""
