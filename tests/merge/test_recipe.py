"""Recipe strings: the model card's example, round trips, errors with positions, evaluation."""

import random

import pytest
import torch

from tinylm.errors import TinyLMError
from tinylm.merge.recipe import (Leaf, Merge, evaluate_recipe, format_recipe, format_t, leaves,
                                 parse_recipe)
from tinylm.merge.slerp import merge_state_dicts, slerp_tensor

CARD = ("gen1_gen0_step_00004000+step_00025542@t0.50 + "
        "gen0_step_00004000+step_00010000@t0.65 @t0.80")


def test_card_example_parses_as_a_gen1_merge_of_two_gen0_merges():
    tree = parse_recipe(CARD)
    assert tree == Merge(Merge(Leaf("step_00004000"), Leaf("step_00025542"), 0.50, 0),
                         Merge(Leaf("step_00004000"), Leaf("step_00010000"), 0.65, 0), 0.80, 1)
    assert format_recipe(tree) == CARD
    assert leaves(tree) == ["step_00004000", "step_00025542", "step_00010000"]


def random_tree(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.3:
        return Leaf(rng.choice(["step_00004000", "step_00025542", "final", "ckpt-3.pt", "g7"]))
    t = rng.choice([0.0, 0.5, 0.65, 0.8, 1.0, 0.125, 0.3333])
    return Merge(random_tree(rng, depth - 1), random_tree(rng, depth - 1), t, rng.randint(0, 12))


@pytest.mark.parametrize("compact", [False, True])
def test_round_trip(compact):
    rng = random.Random(0)
    for _ in range(200):
        tree = random_tree(rng, 4)
        text = format_recipe(tree, compact=compact)
        assert parse_recipe(text) == tree
        assert format_recipe(parse_recipe(text), compact=compact) == text
    assert parse_recipe(CARD.replace(" ", "")) == parse_recipe(CARD)  # compact form of the card


def test_t_spelling():
    assert [format_t(t) for t in (0.5, 0.0, 1.0, 0.125, 0.65)] == \
        ["0.50", "0.00", "1.00", "0.125", "0.65"]


@pytest.mark.parametrize("text, position", [
    ("gen1_a+b", 8),                # missing @t
    ("gen1_a + b@t0.50", 10),       # spaced merge needs a spaced @t
    ("gen0_a+b@t0.5", 10),          # two decimals
    ("gen0_a+b@t0.500", 14),        # no trailing zeros beyond two decimals
    ("gen0_a+b@t1.50", 10),         # t in [0, 1]
    ("gen01_a+b@t0.50", 3),         # generation spelt without leading zeros
    ("gen0_gen1_a + b @t0.50+c@t0.25", 11),  # spaces only around the outermost merge
    ("gen0_a+b@t0.50 x", 14),       # trailing text
    ("", 0),
])
def test_bad_strings_name_the_position(text, position):
    with pytest.raises(TinyLMError, match=f"at position {position}"):
        parse_recipe(text)


def test_bad_leaf_names_are_refused_when_formatting():
    for name in ("gen2_x", "a+b", "has space", ""):
        with pytest.raises(TinyLMError, match="cannot be a leaf name"):
            format_recipe(Merge(Leaf(name), Leaf("b"), 0.5, 0))


def test_evaluate_rebuilds_the_merge_and_loads_each_leaf_once():
    gen = torch.Generator().manual_seed(0)
    weights = {name: {"w": torch.randn(6, 5, generator=gen)}
               for name in ("step_00004000", "step_00025542", "step_00010000")}
    loads = []

    def load(name):
        loads.append(name)
        return weights[name]

    merged = evaluate_recipe(parse_recipe(CARD), load, merge_state_dicts)
    w = {k: v["w"] for k, v in weights.items()}
    left = slerp_tensor(w["step_00004000"], w["step_00025542"], 0.50)
    right = slerp_tensor(w["step_00004000"], w["step_00010000"], 0.65)
    torch.testing.assert_close(merged["w"], slerp_tensor(left, right, 0.80))
    assert sorted(loads) == sorted(weights)
