"""Settings of `tinylm image train` (torch-free, so the CLI can build its flags at once)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ImageTrainConfig:
    steps: int = 2000
    """Optimizer steps (the run also stops at `minutes`)."""
    minutes: float = 0.0
    """Wall-clock budget in minutes; 0 = no limit."""
    crop: int = 64
    """Side of the random square crops."""
    batch_size: int = 8
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.0
    ssim_weight: float = 0.2
    """Weight of (1 - SSIM) beside L1."""
    seed: int = 0
    save_every: int = 250
    """Steps between checkpoints (0: only at the end)."""
    log_every: int = 25
