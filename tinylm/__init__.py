"""tinylm: train, score, SLERP-merge and ship tiny language models.

The public Python API is deliberately small:

    import tinylm
    model = tinylm.load("runs/x/checkpoints/step_00000300")   # a checkpoint dir
    print(model.generate("Once upon a time", max_new_tokens=50, seed=0))
"""

from tinylm.errors import TinyLMError

__version__ = "0.1.0"


def load(path, device="cpu"):
    """Load a checkpoint directory as a ready-to-use `LoadedModel` (model + tokenizer)."""
    from tinylm.infer.generate import LoadedModel

    return LoadedModel.from_checkpoint(path, device=device)


__all__ = ["TinyLMError", "load", "__version__"]
