"""Turning logits into the next token: repetition penalty, temperature, top-k, top-p.

Kept apart from the model and the engine (the engine only knows ids). Order of operations, as
Hugging Face `generate` applies them: repetition penalty (Keskar et al. 2019: a seen token's
positive logit is divided by the penalty, a negative one multiplied), temperature, top-k,
top-p (nucleus, Holtzman et al. 2020), then a draw from the softmax with the caller's
generator, so a fixed seed gives the same text. Temperature 0 means greedy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tinylm.errors import TinyLMError

# %% export (the sampler: copied into the single-file export; see export/single_file.py)


@dataclass
class SamplingConfig:
    temperature: float = 0.8
    top_k: int = 0              # 0 disables
    top_p: float = 1.0          # 1 disables
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if self.temperature < 0:
            raise TinyLMError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise TinyLMError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise TinyLMError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise TinyLMError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


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
