"""Training: schedules, optimizers, atomic checkpoints and the loop."""
