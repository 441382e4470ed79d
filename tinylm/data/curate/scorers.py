"""Per-row scores in bits per byte: how hard a text is to predict, by a compressor or a model.

Two scorers, both answering "bits per byte" so that filter and rank can use either:

  zlib    the text's DEFLATE size (level 9) in bits over its UTF-8 bytes. A cheap difficulty
          proxy: repetitive, formulaic text compresses well (low), dense or noisy text does
          not (high). Compression as a measure of text complexity: Jiang et al., "Less is
          More: Parameter-Free Text Classification with Gzip" (ACL Findings 2023).
  CKPT    a tinylm checkpoint's per-byte loss, -log2 p(text) / bytes, scored with the eval
          core's rolling windows (`eval/lm.py`, lm-eval's loglikelihood_rolling). With a model
          trained on reference text this is the learned quality score of the issue: text the
          reference model finds likely scores low (cf. the perplexity filter of CCNet,
          Wenzek et al. 2020).

Scorers are picklable by their settings only: the model is loaded on first use in whichever
process scores, so datatrove workers each load their own copy.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

from tinylm.errors import TinyLMError


class ZlibScorer:
    name = "zlib"

    def settings(self) -> dict:
        return {"scorer": "zlib", "level": 9, "unit": "bits per byte"}

    def bits_per_byte(self, text: str) -> float:
        data = text.encode("utf-8", errors="surrogatepass")
        if not data:
            return 0.0
        return 8.0 * len(zlib.compress(data, 9)) / len(data)


class ModelScorer:
    """A tinylm checkpoint's bits per byte of each text (lower = more like its training
    data)."""

    def __init__(self, checkpoint: str | Path):
        from tinylm.io import is_checkpoint_folder

        self.checkpoint = str(checkpoint)
        if not is_checkpoint_folder(Path(checkpoint)):
            raise TinyLMError(f"--scorer {checkpoint}: not a tinylm checkpoint folder (give "
                              f"'zlib' or a checkpoint, e.g. runs/x/checkpoints/step_00000300)")
        self._scorer = None
        self.name = f"model:{Path(checkpoint).name}"

    def settings(self) -> dict:
        from tinylm.io import sha256_file

        return {"scorer": "model", "checkpoint": self.checkpoint, "unit": "bits per byte",
                "weights_sha256": sha256_file(Path(self.checkpoint) / "model.safetensors")}

    def __getstate__(self):  # the loaded model stays in the process that loaded it
        return {"checkpoint": self.checkpoint, "name": self.name, "_scorer": None}

    def _lm(self):
        if self._scorer is None:
            import torch

            import tinylm
            from tinylm.eval.lm import LMScorer

            torch.set_num_threads(1)  # one thread per worker: workers are the parallelism
            loaded = tinylm.load(self.checkpoint)
            self._scorer = LMScorer(loaded.model, loaded.tokenizer)
        return self._scorer

    def bits_per_byte(self, text: str) -> float:
        data = text.encode("utf-8", errors="surrogatepass")
        if not data:
            return 0.0
        logprob = self._lm().loglikelihood_rolling([text])[0]  # natural log
        return -logprob / math.log(2) / len(data)


def make_scorer(spec: str | None):
    """'zlib' (or None) -> ZlibScorer; a checkpoint folder -> ModelScorer."""
    if spec in (None, "", "zlib"):
        return ZlibScorer()
    return ModelScorer(spec)
