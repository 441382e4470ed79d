"""Inference: the sampler (sampling.py) and the KV-cached generation engine (generate.py)."""
