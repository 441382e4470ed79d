"""Export: ship a checkpoint outside tinylm.

`single_file` writes one self-contained Python file (model, weights, tokenizer, sampler; needs
only torch) that gives the same text as `tinylm generate`. The `tinylm export` subcommands are
registered by `tinylm.export.cli`.
"""

from tinylm.export.single_file import (
    TOKENIZER_SOURCES,
    export_single_file,
)

__all__ = ["TOKENIZER_SOURCES", "export_single_file"]
