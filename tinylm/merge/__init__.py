"""Merging checkpoints: SLERP/lerp per tensor, model soups, symmetry alignment, recipes.

- `slerp`:  tensor and state-dict SLERP with per-group t and depth gradients (mergekit-style).
- `soup`:   uniform and greedy soups (Wortsman et al. 2022).
- `align`:  permutation/sign alignment of llama checkpoints before merging (Git Re-Basin style).
- `recipe`: parse, format and rebuild the `genN_A+B@tX` recipe strings of the model cards.

`align` imports scipy, so it is not imported here; use `from tinylm.merge.align import ...`.
"""

from tinylm.merge.recipe import Leaf, Merge, evaluate_recipe, format_recipe, parse_recipe
from tinylm.merge.slerp import (METHODS, MergeStats, lerp_tensor, family_layout,
                                merge_state_dicts, plan_t, slerp_tensor)
from tinylm.merge.soup import greedy_soup, uniform_soup

__all__ = [
    "METHODS", "Leaf", "Merge", "MergeStats", "evaluate_recipe", "format_recipe", "greedy_soup",
    "lerp_tensor", "family_layout", "merge_state_dicts", "parse_recipe", "plan_t",
    "slerp_tensor", "uniform_soup",
]
