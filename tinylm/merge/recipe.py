"""Merge recipes: the strings that say how a merged champion was made, and how to rebuild it.

The Glint/Blink model cards describe a tournament champion like this:

    gen1_gen0_step_00004000+step_00025542@t0.50 + gen0_step_00004000+step_00010000@t0.65 @t0.80

Read as prefix notation, every piece has one meaning: `genN_` opens a merge made in generation
N, `+` separates its two parents and `@tX.XX` closes it with the interpolation factor. The
example is then a generation-1 merge, at t = 0.80, of two generation-0 merges:
(step_00004000 + step_00025542 at 0.50) and (step_00004000 + step_00010000 at 0.65). The card
writes the outermost `+` and `@t` with a space around them for readability; inner ones have none.

Grammar (whitespace is only allowed where shown):

    recipe  := leaf | merge | spaced
    spaced  := "gen" GEN "_" operand " + " operand " @t" T    (outermost merge only)
    merge   := "gen" GEN "_" operand "+" operand "@t" T
    operand := leaf | merge
    leaf    := [A-Za-z0-9._-]+, not starting with "gen" [0-9]+ "_"
    GEN     := "0" | [1-9][0-9]*
    T       := NUM [ "[" GROUP "=" NUM ("," GROUP "=" NUM)* "]" ]
    NUM     := a number in [0, 1] written D "." D D [D* nonzero-D]: two decimals, more only
               when needed (0.50, 0.125; not .5, 0.5 or 0.500)
    GROUP   := [a-z_]+, the groups in alphabetical order, each once

The bracket gives parameter groups their own t (the Glint card's "SLERP of attention and MLP
weights at different blend factors"): `A+B@t0.50[attention=0.30,mlp=0.75]` merges attention
tensors at 0.30, MLP tensors at 0.75 and every other group at 0.50.

Since `genN_` always opens a merge and leaf names cannot contain `+`, `@` or spaces, every
string has at most one parse, and because numbers and generations have a single spelling,
`format_recipe(parse_recipe(s), compact=...) == s` for every accepted `s` (`compact` says
whether the outermost merge is written without spaces). `A+B@tX` means SLERP(A, B, X):
t = 0 gives the left parent, as mergekit's `base_model`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tinylm.errors import TinyLMError


@dataclass(frozen=True)
class Leaf:
    name: str  # a checkpoint name, e.g. step_00004000


@dataclass(frozen=True)
class Merge:
    left: Leaf | Merge    # t = 0 end
    right: Leaf | Merge   # t = 1 end
    t: float
    generation: int
    groups: tuple[tuple[str, float], ...] = ()  # per-group t, sorted by group name

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(sorted((str(g), float(t))
                                                         for g, t in dict(self.groups).items())))


Recipe = Leaf | Merge

_LEAF_RE = re.compile(r"[A-Za-z0-9._-]+")
_GEN_RE = re.compile(r"gen(0|[1-9][0-9]*)_")
_GEN_LOOSE_RE = re.compile(r"gen[0-9]+_")  # reserved for merges, even when badly spelt
_T_RE = re.compile(r"[0-9]\.[0-9]{2}(?:[0-9]*[1-9])?")
_GROUP_RE = re.compile(r"[a-z_]+")


# --------------------------------------------------------------------------- formatting

def format_t(t: float) -> str:
    """Two decimals, more only if needed to write t exactly (0.5 -> "0.50", 0.125 -> "0.125")."""
    if not 0.0 <= t <= 1.0:
        raise TinyLMError(f"recipe: t must be in [0, 1], got {t}")
    for digits in range(2, 18):
        text = f"{t:.{digits}f}"
        if float(text) == t:
            break
    head, tail = text.split(".")
    return f"{head}.{tail[:2]}{tail[2:].rstrip('0')}"


def _check_leaf(name: str) -> None:
    if not _LEAF_RE.fullmatch(name) or _GEN_LOOSE_RE.match(name):
        raise TinyLMError(f"recipe: {name!r} cannot be a leaf name: use letters, digits, '.', "
                          f"'_' and '-', and do not start with 'gen<N>_'")


def format_recipe(tree: Recipe, compact: bool = False) -> str:
    """Write a recipe; the outermost merge gets spaces (as the model cards) unless `compact`."""
    if isinstance(tree, Leaf):
        _check_leaf(tree.name)
        return tree.name
    if tree.generation < 0:
        raise TinyLMError(f"recipe: generation must be >= 0, got {tree.generation}")
    plus, at = ("+", "@t") if compact else (" + ", " @t")
    left, right = format_recipe(tree.left, True), format_recipe(tree.right, True)
    groups = ""
    if tree.groups:
        for name, _ in tree.groups:
            if not _GROUP_RE.fullmatch(name):
                raise TinyLMError(f"recipe: {name!r} cannot be a group name")
        groups = "[" + ",".join(f"{g}={format_t(t)}" for g, t in tree.groups) + "]"
    return f"gen{tree.generation}_{left}{plus}{right}{at}{format_t(tree.t)}{groups}"


# --------------------------------------------------------------------------- parsing

class _Parser:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def fail(self, expected: str):
        found = repr(self.text[self.pos]) if self.pos < len(self.text) else "end of text"
        raise TinyLMError(f"recipe: expected {expected} at position {self.pos}, found {found}\n"
                          f"  {self.text}\n  {' ' * self.pos}^")

    def take(self, token: str) -> bool:
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def match(self, pattern: re.Pattern, expected: str) -> re.Match:
        found = pattern.match(self.text, self.pos)
        if not found:
            self.fail(expected)
        self.pos = found.end()
        return found

    def operand(self, outermost: bool = False) -> Recipe:
        gen = _GEN_RE.match(self.text, self.pos)
        if not gen and _GEN_LOOSE_RE.match(self.text, self.pos):
            self.pos += 3
            self.fail("a generation number without leading zeros")
        if not gen:
            return Leaf(self.match(_LEAF_RE, "a checkpoint name or 'gen<N>_'").group())
        self.pos = gen.end()
        left = self.operand()
        spaced = outermost and self.text.startswith(" + ", self.pos)
        plus, at = (" + ", " @t") if spaced else ("+", "@t")
        if not self.take(plus):
            self.fail(f"{plus!r} between the two parents")
        right = self.operand()
        if not self.take(at):
            self.fail(f"{at!r} after the second parent")
        t = self.number()
        groups = []
        if self.take("["):
            while True:
                name = self.match(_GROUP_RE, "a group name").group()
                if groups and name <= groups[-1][0]:
                    self.pos -= len(name)
                    self.fail("group names in alphabetical order, each once")
                if not self.take("="):
                    self.fail("'=' after the group name")
                groups.append((name, self.number()))
                if self.take("]"):
                    break
                if not self.take(","):
                    self.fail("',' or ']'")
        return Merge(left, right, t, int(gen.group(1)), tuple(groups))

    def number(self) -> float:
        start = self.pos
        t = float(self.match(_T_RE, "t written like 0.50").group())
        if t > 1.0:
            self.pos = start
            self.fail("t in [0, 1]")
        return t


def parse_recipe(text: str) -> Recipe:
    """Parse a recipe string (grammar in the module docstring); errors give the position."""
    parser = _Parser(text)
    tree = parser.operand(outermost=True)
    if parser.pos != len(text):
        parser.fail("end of recipe")
    return tree


# --------------------------------------------------------------------------- evaluation

def leaves(tree: Recipe) -> list[str]:
    """Checkpoint names used by a recipe, first use first, without repeats."""
    if isinstance(tree, Leaf):
        return [tree.name]
    return list(dict.fromkeys(leaves(tree.left) + leaves(tree.right)))


def evaluate_recipe(tree: Recipe, load_state_dict: Callable[[str], dict],
                    merge_fn: Callable | None = None) -> dict:
    """Rebuild a recipe's weights: load each leaf once, merge bottom-up with
    `merge_fn(left_sd, right_sd, t)`, or `merge_fn(left_sd, right_sd, t, t_by_group)` for a
    merge with per-group t (default: `merge_state_dicts`, SLERP)."""
    if merge_fn is None:
        from tinylm.merge.slerp import merge_state_dicts as merge_fn
    cache: dict[str, dict] = {}

    def build(node: Recipe) -> dict:
        if isinstance(node, Leaf):
            if node.name not in cache:
                cache[node.name] = load_state_dict(node.name)
            return cache[node.name]
        if node.groups:
            return merge_fn(build(node.left), build(node.right), node.t, dict(node.groups))
        return merge_fn(build(node.left), build(node.right), node.t)

    return build(tree)
