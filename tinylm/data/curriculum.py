"""Curriculum sampling: early steps draw their windows from the easy start of the data.

A dataset ranked by `tinylm data rank` holds its rows easiest first, so its packed training
tokens run from easy to hard. `--curriculum` then draws each step's windows from the first
c(t) of the tokens only, with the square-root competence of Platanios et al. (2019),
"Competence-based Curriculum Learning for Neural Machine Translation":

    c(t) = min(1, sqrt(t * (1 - c0^2) / T + c0^2)),   c0 = 0.1, T = the run's steps

so the model starts on the easiest tenth and sees all the data by the last step. c(t) is a pure
function of the step, so batches stay a pure function of (seed, step, micro-step) and
`--resume` stays exact (with the same `steps`; T is the run's step budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

START_COMPETENCE = 0.1


def competence(step: int, total_steps: int, start: float = START_COMPETENCE) -> float:
    if total_steps <= 0:
        return 1.0
    return min(1.0, math.sqrt(step * (1 - start ** 2) / total_steps + start ** 2))


@dataclass
class CurriculumTokens:
    """Training tokens in curriculum order and the run's step budget."""

    tokens: np.ndarray
    total_steps: int
    start: float = START_COMPETENCE

    def __len__(self) -> int:
        return len(self.tokens)

    def visible(self, step: int, seq_len: int) -> np.ndarray:
        """The prefix that step `step` may sample from (at least two windows' worth)."""
        n = len(self.tokens)
        keep = max(int(competence(step, self.total_steps, self.start) * n), 2 * (seq_len + 1))
        return self.tokens[:min(n, keep)]
