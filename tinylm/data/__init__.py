"""Data: named corpora (`sources`), packed token files (`pack`), deterministic batches (`sampler`)."""
