"""The sampling settings, in a module of their own so the command line can read their defaults
without importing torch (`tinylm --help` stays instant). The sampler is `sampling.py`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tinylm.errors import TinyLMError

# %% export (copied into the single-file export; see export/single_file.py)

@dataclass
class SamplingConfig:
    temperature: float = field(default=0.8, metadata={"help": "0 = greedy"})
    top_k: int = field(default=0, metadata={"help": "keep the k most likely ids; 0 disables"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling; 1 disables"})
    repetition_penalty: float = field(default=1.0, metadata={
        "help": "divide a seen id's positive logit (multiply a negative one); 1 disables"})

    def __post_init__(self):
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise TinyLMError(f"{name} must be a finite number, got {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise TinyLMError(f"top_k must be a whole number, got {self.top_k!r}")
        if self.temperature < 0:
            raise TinyLMError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise TinyLMError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise TinyLMError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise TinyLMError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
# %% end export
