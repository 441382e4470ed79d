"""Model soups: uniform and greedy weight averaging (Wortsman et al. 2022, "Model soups").

The greedy soup follows the paper's recipe (mlfoundations/model-soups `main.py`, step 4): score
every candidate alone, sort best first, start the soup from the best one, then try each next
candidate in the running *uniform* average of the kept models and keep it only if the held-out
score strictly improves. Averaging runs in float32 (float64 for float64 weights) and is cast back
to each tensor's dtype; integer and bool tensors are taken from the first model.

We keep a float32 *sum* of the kept models rather than updating an average in place, so a soup
of n models is exactly their uniform average, however many trials came before.

Tensors under a `frozen` prefix (the family record's `frozen_prefixes`: parts that are never
trained, such as a BLT's entropy patcher) are not averaged: every model must hold them bit for
bit (else the soup is refused, as a SLERP merge is), and the soup copies them, since a float
average of n equal tensors can come out an ulp away from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from tinylm.errors import TinyLMError
from tinylm.merge.slerp import check_compatible, check_frozen_equal

StateDict = Mapping[str, torch.Tensor]


def _accumulator(sd: StateDict) -> dict[str, torch.Tensor]:
    return {k: (v.to(torch.float64 if v.dtype == torch.float64 else torch.float32, copy=True)
                if v.is_floating_point() else v.clone()) for k, v in sd.items()}


def _add_(acc: dict[str, torch.Tensor], sd: StateDict) -> None:
    for k, v in sd.items():
        if v.is_floating_point():
            acc[k].add_(v.to(acc[k].dtype))


def _average(acc: Mapping[str, torch.Tensor], n: int, like: StateDict,
             frozen: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    frozen = tuple(frozen)
    return {k: like[k].clone() if frozen and k.startswith(frozen)
            else (v / n).to(like[k].dtype) if like[k].is_floating_point() else v.clone()
            for k, v in acc.items()}


def _check_alike(first: StateDict, others: Iterable[tuple[str, StateDict]], first_name: str,
                 frozen: Sequence[str]) -> None:
    for name, sd in others:
        check_compatible(first, sd, what=f"{first_name} and {name}")
        check_frozen_equal(first, sd, frozen)


def uniform_soup(state_dicts: Sequence[StateDict], frozen: Sequence[str] = ()
                 ) -> dict[str, torch.Tensor]:
    """The element-wise mean of several same-shaped state dicts (`frozen` parts copied)."""
    state_dicts = list(state_dicts)
    if not state_dicts:
        raise TinyLMError("uniform_soup needs at least one state dict")
    first = state_dicts[0]
    _check_alike(first, ((f"state dict {i}", sd) for i, sd in enumerate(state_dicts[1:], 1)),
                 "state dict 0", frozen)
    acc = _accumulator(first)
    for sd in state_dicts[1:]:
        _add_(acc, sd)
    return _average(acc, len(state_dicts), first, frozen)


def greedy_soup(candidates: Mapping[str, StateDict] | Iterable[tuple[str, StateDict]],
                score_fn: Callable[[StateDict], float], higher_is_better: bool = False,
                frozen: Sequence[str] = ()) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Greedy soup of named candidates; returns (soup, names kept, in the order added).

    `score_fn(state_dict)` is the held-out metric; lower is better by default (a loss), set
    `higher_is_better` for an accuracy. Ties keep the candidates' given order; a candidate whose
    addition leaves the score unchanged is not kept ("strictly improves").
    """
    items = list(candidates.items() if isinstance(candidates, Mapping) else candidates)
    if not items:
        raise TinyLMError("greedy_soup needs at least one candidate")
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise TinyLMError(f"greedy_soup: candidate names repeat: {names}")
    _check_alike(items[0][1], ((f"candidate {name!r}", sd) for name, sd in items[1:]),
                 f"candidate {names[0]!r}", frozen)

    sign = 1.0 if higher_is_better else -1.0
    scores = {name: float(score_fn(sd)) for name, sd in items}
    ranked = sorted(items, key=lambda item: -sign * scores[item[0]])  # stable: ties keep order
    best_name, best_sd = ranked[0]
    acc, kept, best = _accumulator(best_sd), [best_name], scores[best_name]
    for name, sd in ranked[1:]:
        trial_acc = {k: v.clone() for k, v in acc.items()}
        _add_(trial_acc, sd)
        score = float(score_fn(_average(trial_acc, len(kept) + 1, best_sd, frozen)))
        if sign * score > sign * best:
            acc, best = trial_acc, score
            kept.append(name)
    return _average(acc, len(kept), best_sd, frozen), kept
