"""Optimizers with weight-decay groups, and their state as flat tensors for safetensors.

Which parameters are exempt from weight decay is the family record's call
(`Family.no_weight_decay`): for llama and looped, embeddings and every 1-D tensor, as in nanoGPT
and litgpt.
"""

from __future__ import annotations

import torch

OPTIMIZERS = ("adamw", "nadamw")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    from tinylm.models import get_family

    exempt = get_family(model.family).no_weight_decay
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if exempt(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model, name: str, lr: float, weight_decay: float, betas, eps: float,
                    device_type: str):
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        # the fused kernel exists for CUDA and (torch >= 2.4) CPU; it is one pass per step
        fused = device_type in ("cuda", "cpu")
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
        except (RuntimeError, TypeError):
            return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    if name == "nadamw":
        # NAdam with decoupled (AdamW-style) weight decay, as the Blink card trains with
        return torch.optim.NAdam(groups, lr=lr, betas=betas, eps=eps,
                                 decoupled_weight_decay=True)
    raise ValueError(f"unknown optimizer {name!r}; choose {', '.join(OPTIMIZERS)}")


def optimizer_state_tensors(optimizer) -> dict[str, torch.Tensor]:
    """Flatten optimizer.state_dict()['state'] into {"optim.<param>.<key>": tensor}. Scalars
    become 0-d tensors, so the whole state fits in safetensors with no pickling."""
    flat = {}
    for index, entry in optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value, dtype=torch.float64)
            flat[f"optim.{index}.{key}"] = tensor.detach().clone()
    return flat


def load_optimizer_state(optimizer, flat: dict[str, torch.Tensor]) -> None:
    current = optimizer.state_dict()
    state: dict[int, dict] = {}
    for name, tensor in flat.items():
        if not name.startswith("optim."):
            continue
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    current["state"] = state
    optimizer.load_state_dict(current)
