"""Spherical linear interpolation (SLERP) of two checkpoints, tensor by tensor.

SLERP treats each weight tensor as one flattened vector and walks the great-circle arc from `a`
to `b` (Shoemaker 1985; popularised for model merging by mergekit, arcee-ai/mergekit
`mergekit/merge_methods/slerp.py`). With theta the angle between the two vectors:

    slerp(a, b, t) = sin((1 - t) theta) / sin(theta) * a + sin(t theta) / sin(theta) * b

Notable choices (the mergekit facts are from arcee-ai/mergekit `mergekit/merge_methods/slerp.py`):

- One angle per tensor, as mergekit does. The three reductions (two norms and the dot product)
  run in float32 (float64 when the inputs are float64); the trigonometry is done on Python
  floats (float64). The result is cast back to the input dtype and keeps its shape.
- `t = 0` gives `a` (mergekit's `base_model`), `t = 1` gives `b`, both exactly.
- Nearly parallel tensors (cos > `dot_threshold` = 0.9995, mergekit's value) fall back to lerp,
  where SLERP is numerically 0/0 and equal to lerp anyway.
- A zero tensor (norm <= `eps`) has no direction: we lerp. mergekit instead goes through its
  norm guard and ends up on a quarter-circle arc (theta = pi/2), so the two differ there.
- Opposite directions. mergekit tests `abs(dot) > threshold`, so a nearly *anti*-parallel pair
  silently takes the lerp branch and lands near zero at t = 0.5. We take the short arc of the
  true angle, `acos` of the signed cosine (clamped to [-1, 1]), for every cos >= -threshold.
  Only when cos < -threshold, where the arc is (numerically) undefined because every great
  circle through a and -a is equally short, do we fall back to lerp, and we *count and name*
  such tensors in `MergeStats.antiparallel` so a tournament can log or skip them. A sign flip
  of one tensor is not a symmetry of the network: flipping it back would
  change the function, so we do not.
- Fused tensors. tinylm fuses q/k/v (`wqkv`) and gate/up (`w13`); mergekit sees the Hugging
  Face layout with separate `q_proj`, `k_proj`, ... and takes one angle per part. The family
  record's `fused_splits` gives each part its own angle, which matches mergekit's numbers;
  without it the fused tensor gets a single angle.

Per-tensor t: a scalar, a per-group override (`t_by_group`, groups from the family record's
`group_of`), and mergekit-style depth gradients: a list of anchor values interpolated linearly
at each tensor's depth in [0, 1], which the family record's `depth_of` gives (llama: layer
i / (n_layers - 1); looped: prelude, then each loop, then coda). Tensors outside the stack of
blocks take a gradient's first value, as mergekit reads them at position 0. A tensor that
stacks per-loop pieces along dim 0 (per-loop LoRA, loop embeddings) has one depth per row, and
each row is merged with its own t.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from tinylm.errors import TinyLMError

DOT_THRESHOLD = 0.9995  # mergekit's value, documented there as "not recommended to alter"

TValue = float | Sequence[float]  # a scalar t or a depth gradient (list of anchor values)
GroupFn = Callable[[str], str]
DepthFn = Callable[[Sequence[str]], Mapping[str, object]]  # names -> {name: Depth}


# --------------------------------------------------------------------------- tensor level

def _check_t(t: float) -> float:
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise TinyLMError(f"interpolation factor t must be in [0, 1], got {t}")
    return t


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def lerp_tensor(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """(1 - t) a + t b, computed in float32 (float64 for float64 inputs), cast back.

    torch.lerp switches formula at t = 0.5 so both ends are exact: t = 0 gives a, t = 1 gives b.
    """
    t = _check_t(t)
    work = _work_dtype(a)
    return torch.lerp(a.to(work), b.to(work), t).to(a.dtype)


def _slerp_with_kind(a: torch.Tensor, b: torch.Tensor, t: float,
                     dot_threshold: float = DOT_THRESHOLD,
                     eps: float = 1e-8) -> tuple[torch.Tensor, str]:
    """SLERP plus which branch was taken: 'slerp', 'parallel', 'antiparallel' or 'zero'."""
    t = _check_t(t)
    work = _work_dtype(a)
    a_w, b_w = a.to(work).reshape(-1), b.to(work).reshape(-1)  # no copy for float32 inputs
    stats = torch.stack([torch.linalg.vector_norm(a_w), torch.linalg.vector_norm(b_w),
                         torch.dot(a_w, b_w)])
    norm_a, norm_b, dot = stats.tolist()  # one sync for all three scalars
    if norm_a <= eps or norm_b <= eps:
        kind = "zero"
    else:
        cos = max(-1.0, min(1.0, dot / (norm_a * norm_b)))
        kind = ("parallel" if cos > dot_threshold
                else "antiparallel" if cos < -dot_threshold else "slerp")
    if kind != "slerp":
        return lerp_tensor(a, b, t), kind
    theta = math.acos(cos)
    sin_theta = math.sin(theta)
    coef_a, coef_b = math.sin((1.0 - t) * theta) / sin_theta, math.sin(t * theta) / sin_theta
    out = torch.mul(a_w, coef_a).add_(b_w, alpha=coef_b)
    return out.reshape(a.shape).to(a.dtype), kind


def slerp_tensor(a: torch.Tensor, b: torch.Tensor, t: float,
                 dot_threshold: float = DOT_THRESHOLD, eps: float = 1e-8) -> torch.Tensor:
    """SLERP of two same-shape floating tensors at t in [0, 1]; see the module docstring for
    the fallbacks (nearly parallel, zero, antiparallel -> lerp). Keeps shape and dtype."""
    if a.shape != b.shape:
        raise TinyLMError(f"slerp: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return _slerp_with_kind(a, b, t, dot_threshold, eps)[0]


def _lerp_with_kind(a, b, t, dot_threshold=DOT_THRESHOLD, eps=1e-8):
    return lerp_tensor(a, b, t), "lerp"


METHODS: dict[str, Callable[..., tuple[torch.Tensor, str]]] = {
    "slerp": _slerp_with_kind,
    "lerp": _lerp_with_kind,
}


# --------------------------------------------------------------------------- per-tensor t

def gradient_value(values: Sequence[float], position: float) -> float:
    """mergekit's gradient: anchors spread evenly over [0, 1], linear in between."""
    values = [float(v) for v in values]
    if not values:
        raise TinyLMError("a t gradient needs at least one value")
    scaled = position * (len(values) - 1)
    i0 = min(int(scaled), len(values) - 1)
    i1 = min(i0 + 1, len(values) - 1)
    frac = scaled - i0
    return (1.0 - frac) * values[i0] + frac * values[i1]


def _resolve(value: TValue, depth) -> float | tuple[float, ...]:
    """t for one tensor: a scalar as is; a gradient at the tensor's depth (its first value
    outside the stack; one t per row for a per-row depth)."""
    if isinstance(value, (int, float)):
        return _check_t(value)
    if isinstance(value, (str, bytes)):
        raise TinyLMError(f"t must be a number or a list of numbers, got {value!r}")
    if isinstance(depth, tuple):
        return tuple(_check_t(gradient_value(value, d)) for d in depth)
    return _check_t(gradient_value(value, 0.0 if depth is None else depth))


def reference_layout():
    """(group_of, depth_of) of the reference family (`tinylm.models.reference_family`), for
    callers that name no family."""
    from tinylm.models import reference_family

    record = reference_family()
    return record.group_of, (lambda names: record.depth_of(names, None))


def family_layout(record, config) -> dict:
    """`merge_state_dicts` keywords for a model of this family and config: its groups, the
    depth of each tensor and its fused splits, all from the family record."""
    return {"group_of": record.group_of,
            "depth_of": lambda names: record.depth_of(names, config),
            "split_of": record.fused_splits(config) if record.fused_splits else None,
            "frozen": tuple(getattr(record, "frozen_prefixes", ()))}


def plan_t(names: Sequence[str], t: TValue = 0.5, group_of: GroupFn | None = None,
           t_by_group: Mapping[str, TValue] | None = None,
           depth_gradient: Sequence[float] | None = None,
           depth_of: DepthFn | None = None) -> dict[str, float | tuple[float, ...]]:
    """The t each tensor will be merged with (a tuple: one t per row along dim 0).

    Precedence: the tensor's group entry in `t_by_group` (scalar or gradient), then
    `depth_gradient`, then `t` (which may itself be a gradient list). Depths come from
    `depth_of(names)` (see `family_layout`; default: the reference family's layout). A `t_by_group`
    key that matches no tensor is an error: a typo there must not silently fall back.
    """
    default_group, default_depth = reference_layout() if (group_of is None
                                                           or depth_of is None) else (None, None)
    group_of, depth_of = group_of or default_group, depth_of or default_depth
    depths = depth_of(list(names))
    default: TValue = depth_gradient if depth_gradient is not None else t
    plan, used = {}, set()
    for name in names:
        value = default
        if t_by_group:
            group = group_of(name)
            if group in t_by_group:
                value = t_by_group[group]
                used.add(group)
        plan[name] = _resolve(value, depths.get(name))
    unused = sorted(set(t_by_group or {}) - used)
    if unused:
        present = sorted({group_of(n) for n in names})
        raise TinyLMError(f"t_by_group names group(s) {unused} that match no tensor; "
                          f"groups present: {present}")
    return plan


# --------------------------------------------------------------------------- state-dict level

@dataclass
class MergeStats:
    """What happened to each tensor (or fused part) during a merge."""

    slerp: int = 0
    lerp: int = 0               # method="lerp"
    parallel: int = 0           # SLERP fell back to lerp: nearly parallel
    zero: int = 0               # SLERP fell back to lerp: a zero tensor
    antiparallel: list[str] = field(default_factory=list)  # lerp fallback, cos < -threshold
    copied: list[str] = field(default_factory=list)        # non-float tensors, taken from a

    @property
    def fallbacks(self) -> int:
        """How many SLERPs fell back to lerp, for any reason."""
        return self.parallel + self.zero + len(self.antiparallel)

    def count(self, name: str, kind: str) -> None:
        if kind == "antiparallel":
            self.antiparallel.append(name)
        else:
            setattr(self, kind, getattr(self, kind) + 1)


def check_compatible(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                     what: str = "state dicts") -> None:
    """Same keys, shapes and dtypes, or a TinyLMError naming the first offending tensor."""
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        first = only_a[0] if only_a else only_b[0]
        raise TinyLMError(f"{what} have different tensors: {first!r} is only in "
                          f"{'the first' if only_a else 'the second'} "
                          f"({len(only_a)} only in first, {len(only_b)} only in second)")
    for name, x in a.items():
        y = b[name]
        if x.shape != y.shape:
            raise TinyLMError(f"{what}: tensor {name!r} has shape {tuple(x.shape)} vs "
                              f"{tuple(y.shape)}")
        if x.dtype != y.dtype:
            raise TinyLMError(f"{what}: tensor {name!r} has dtype {x.dtype} vs {y.dtype}")


def check_frozen_equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                       frozen: Sequence[str]) -> set[str]:
    """The names under the `frozen` prefixes, after checking a and b hold them bit for bit
    equal (one line naming the first that differs)."""
    kept = {name for name in a if name.startswith(tuple(frozen))} if frozen else set()
    for name in sorted(kept):
        if not torch.equal(a[name], b[name]):
            prefix = next(p for p in frozen if name.startswith(p))
            raise TinyLMError(f"cannot merge: the frozen part {prefix!r} differs between the "
                              f"two models (first at {name!r}); models to merge must share it "
                              f"exactly")
    return kept


def merge_state_dicts(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                      t: TValue = 0.5, method: str = "slerp", group_of: GroupFn | None = None,
                      t_by_group: Mapping[str, TValue] | None = None,
                      depth_gradient: Sequence[float] | None = None,
                      split_of: Callable[[str], Sequence[int] | None] | None = None,
                      depth_of: DepthFn | None = None,
                      dot_threshold: float = DOT_THRESHOLD, eps: float = 1e-8,
                      return_stats: bool = False, frozen: Sequence[str] = ()):
    """Merge two state dicts tensor by tensor; t = 0 gives `a`, t = 1 gives `b`.

    `method` is "slerp" or "lerp". t per tensor comes from `plan_t` (scalar, per-group and
    depth-gradient settings). `split_of(name)` may return row sizes that split a fused tensor
    into parts merged separately; `family_layout(record, config)` gives group_of, depth_of and
    split_of for a family. Integer and bool tensors are copied from `a`. Returns a new dict,
    and a `MergeStats` too when `return_stats` is set. Tensors whose names start with a
    `frozen` prefix (the family record's `frozen_prefixes`: parts that are never trained, such
    as BLT's entropy patcher) must be equal in a and b, and are copied unchanged.
    """
    if method not in METHODS:
        raise TinyLMError(f"unknown merge method {method!r}; known: {', '.join(sorted(METHODS))}")
    check_compatible(a, b)
    kept = check_frozen_equal(a, b, frozen)
    merge_fn, stats = METHODS[method], MergeStats()
    plan = plan_t([n for n in a if n not in kept], t, group_of, t_by_group, depth_gradient,
                  depth_of)
    out: dict[str, torch.Tensor] = {}
    for name, x in a.items():
        if name in kept:
            out[name] = x.clone()
            continue
        y = b[name]
        if not x.is_floating_point():
            out[name] = x.clone()
            stats.copied.append(name)
            continue
        sizes = split_of(name) if split_of is not None else None
        t_here = plan[name]
        if isinstance(t_here, tuple):  # one t per row: each row is its own piece
            if sizes is not None or len(t_here) != x.shape[0]:
                raise TinyLMError(f"{name}: {len(t_here)} per-row depths for a tensor of "
                                  f"{x.shape[0]} rows{' that is also fused' if sizes else ''}")
            sizes, t_parts = [1] * x.shape[0], list(t_here)
        elif sizes is None:
            out[name], kind = merge_fn(x, y, t_here, dot_threshold, eps)
            stats.count(name, kind)
            continue
        else:
            t_parts = [t_here] * len(sizes)
        if sum(sizes) != x.shape[0]:
            raise TinyLMError(f"split_of({name!r}) = {sizes} does not add up to the "
                              f"{x.shape[0]} rows of the tensor")
        parts = []
        for i, (xp, yp, tp) in enumerate(zip(x.split(sizes), y.split(sizes), t_parts)):
            merged, kind = merge_fn(xp, yp, tp, dot_threshold, eps)
            parts.append(merged)
            stats.count(f"{name}[part {i}]", kind)
        out[name] = torch.cat(parts)
    return (out, stats) if return_stats else out
