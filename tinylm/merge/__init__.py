"""Merging checkpoints: SLERP/lerp per tensor, model soups, symmetry alignment, recipes.

- `slerp`:  tensor and state-dict SLERP with per-group t and depth gradients (mergekit-style).
- `soup`:   uniform and greedy soups (Wortsman et al. 2022).
- `align`:  permutation/sign alignment before merging (Git Re-Basin style), for families whose
            record declares an AlignSpec.
- `recipe`: parse, format and rebuild the `genN_A+B@tX` recipe strings of the model cards.

`align` imports scipy, so it is not imported here; use `from tinylm.merge.align import ...`.
"""

import importlib

# name -> the submodule defining it; imported on first use, so that `import tinylm.merge.cli`
# (and so `tinylm --help`) does not pay for torch
_EXPORTS = {
    "Leaf": "recipe", "Merge": "recipe", "evaluate_recipe": "recipe", "format_recipe": "recipe",
    "parse_recipe": "recipe", "METHODS": "slerp", "MergeStats": "slerp", "lerp_tensor": "slerp",
    "family_layout": "slerp", "merge_state_dicts": "slerp", "plan_t": "slerp",
    "slerp_tensor": "slerp", "greedy_soup": "soup", "uniform_soup": "soup",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tinylm.merge' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tinylm.merge.{_EXPORTS[name]}"), name)
