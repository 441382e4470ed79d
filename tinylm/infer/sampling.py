"""Turning logits into the next token: repetition penalty, temperature, top-k, top-p.

Kept apart from the model and the engine (the engine only knows ids). Order of operations, as
Hugging Face `generate` applies them: repetition penalty (Keskar et al. 2019: a seen token's
positive logit is divided by the penalty, a negative one multiplied), temperature, top-k,
top-p (nucleus, Holtzman et al. 2020), then a draw from the softmax with the caller's
generator, so a fixed seed gives the same text. Temperature 0 means greedy.
"""

from __future__ import annotations

import torch

from tinylm.infer.settings import SamplingConfig  # noqa: F401  (re-exported: the sampler's input)

# %% export (the sampler: copied into the single-file export; see export/single_file.py)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float):
    """logits (B, V); seen (B, V) bool mask of tokens already in each row's context."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def sample_next(logits: torch.Tensor, config: SamplingConfig, seen: torch.Tensor | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """logits (B, V) float -> next ids (B,)."""
    logits = logits.float()
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / config.temperature
    if config.top_k and config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) > config.top_p  # keep the first over p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
# %% end export
