"""Per-loop LoRA: one shared linear layer, one low-rank delta for each application of it.

LoRA (Hu et al. 2021) adds a trainable low-rank delta to a frozen or shared weight:
y = x W^T + x A^T B^T, with A (rank, in) and B (out, rank). The looped family applies one
shared transformer block L times (see looped.py) and gives every loop its own (A_i, B_i), so the
loops can specialise while the block's full-rank weights stay shared.

Notable choices:
- Composition, not a new block: `add_loop_lora` swaps chosen `nn.Linear` children of an
  existing module (llama's `Block`) for `LoopLoRALinear`, a subclass of `nn.Linear` that keeps
  the original `weight` Parameter, so state-dict names of the base weights do not change (as
  litgpt's LoRA layers subclass the base linear layer).
- The loop whose adapter is used is module state (`loop`), set by the caller before each
  application with `set_active_loop`; `None` means the base weight alone. The block's own
  forward stays untouched, which is the point of composing rather than rewriting it.
- B starts at zero, so a fresh adapter is an exact no-op: a new looped model equals the same
  model without LoRA. A starts N(0, 1/in), so B gets a gradient from the first step.
- No alpha/rank scaling: the delta is exactly x A^T B^T. With B zero-initialised the scale only
  rescales B's learning rate, which Adam makes moot.
- Adapters of all loops are stacked in one tensor per layer, `lora_A` (loops, rank, in) and
  `lora_B` (loops, out, rank): one entry per tensor in a checkpoint, and indexing picks a loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# %% export (copied into the single-file export; see export/single_file.py)


class LoopLoRALinear(nn.Linear):
    """`nn.Linear` (no bias) plus one rank-r delta per loop; `loop` picks the active one."""

    def __init__(self, in_features: int, out_features: int, rank: int, n_loops: int):
        super().__init__(in_features, out_features, bias=False)
        self.rank, self.n_loops = rank, n_loops
        self.lora_A = nn.Parameter(torch.empty(n_loops, rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(n_loops, out_features, rank))
        self.loop: int | None = None
        self.reset_lora()

    def reset_lora(self) -> None:
        nn.init.normal_(self.lora_A, mean=0.0, std=1.0 / math.sqrt(self.in_features))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.loop is None:
            return F.linear(x, self.weight)
        a, b = self.lora_A[self.loop], self.lora_B[self.loop]  # (r, in), (out, r)
        tokens = x.numel() // self.in_features
        if tokens * (self.in_features + self.out_features) > self.in_features * self.out_features:
            # many tokens: forming W + BA once is cheaper than two thin matmuls per token
            return F.linear(x, self.weight + b @ a)
        return F.linear(x, self.weight) + F.linear(F.linear(x, a), b)  # decoding: T = 1

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, loops={self.n_loops}"


def add_loop_lora(module: nn.Module, targets: list[str], rank: int,
                  n_loops: int) -> list[LoopLoRALinear]:
    """Replace each `nn.Linear` of `module` whose attribute name is in `targets` (e.g. "wqkv",
    "wo", "w13", "w2") by a `LoopLoRALinear` that shares its weight; returns the new layers.

    A target name that matches no linear layer is an error: a typo must not train a model
    without the adapters it was meant to have.
    """
    found: dict[str, int] = {name: 0 for name in targets}
    layers = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if name not in found or not isinstance(child, nn.Linear):
                continue
            if child.bias is not None:
                raise ValueError(f"LoRA target {name!r} has a bias; only bias-free layers are "
                                 f"supported")
            lora = LoopLoRALinear(child.in_features, child.out_features, rank, n_loops)
            lora.weight = child.weight  # the same Parameter: shared, same state-dict name
            setattr(parent, name, lora)
            layers.append(lora)
            found[name] += 1
    missing = [name for name, count in found.items() if count == 0]
    if missing:
        raise ValueError(f"LoRA targets {missing} match no linear layer in "
                         f"{type(module).__name__}")
    return layers


def set_active_loop(layers: list[LoopLoRALinear], loop: int | None) -> None:
    """Point every adapter layer at loop `loop` (None: base weights only)."""
    for layer in layers:
        layer.loop = loop
# %% end export
