"""The training settings: one dataclass, imported without torch (so `--help` stays fast).

Every field carries two pieces of metadata: `help` (the flag's help text) and `resume` (whether
`--resume` may change it: cadences, the step budget and where the run executes may change; what
decides the weights of a step may not, or the resumed run would not be the one started).

`__post_init__` validates the whole config before any work starts: types (an int field given
3.7 is refused, not truncated; a bool is not an int), NaN and infinity, and every range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from tinylm.train.schedule import SCHEDULES

# tinylm.train.optim.OPTIMIZERS, repeated so this module needs no torch (a test keeps them equal)
OPTIMIZER_NAMES = ("adamw", "nadamw")
DTYPES = ("auto", "float32", "bfloat16")
MAX_INT = 2**31 - 1  # far beyond any sane setting; keeps sizes from overflowing tensors


def _help(text: str, default, resume: bool = False):
    return field(default=default, metadata={"help": text, "resume": resume})


@dataclass
class TrainConfig:
    steps: int = _help("optimizer steps to train for", 300, resume=True)
    batch_size: int = _help("sequences per optimizer step (global, over all processes)", 16)
    grad_accum: int = _help("micro-steps per optimizer step (batch is split across them)", 1)
    seq_len: int = _help("tokens per sequence; 0 = the model's context length", 0)
    lr: float = _help("peak learning rate", 1e-3)
    min_lr_ratio: float = _help("final learning rate as a fraction of the peak", 0.1)
    warmup_steps: int = _help("linear warmup steps", 20)
    schedule: str = _help("cosine | wsd | constant", "cosine")
    decay_frac: float = _help("wsd: fraction of steps spent decaying", 0.2)
    optimizer: str = _help("adamw | nadamw", "adamw")
    weight_decay: float = _help("decoupled weight decay on matrices", 0.1)
    beta1: float = _help("Adam beta1", 0.9)
    beta2: float = _help("Adam beta2", 0.95)
    eps: float = _help("Adam epsilon", 1e-8)
    grad_clip: float = _help("max global gradient norm; 0 disables", 1.0)
    eval_every: int = _help("validate every N steps; 0 only at the end", 50, resume=True)
    eval_batches: int = _help("validation batches per evaluation", 8)
    ckpt_every: int = _help("checkpoint every N steps (the last step is always saved)", 100,
                            resume=True)
    keep_last: int = _help("keep only the newest K checkpoints; 0 keeps all", 0, resume=True)
    keep_every: int = _help("with keep_last: also keep every M-th step", 0, resume=True)
    seed: int = _help("seed for init and data order", 1337)
    dtype: str = _help("auto | float32 | bfloat16 (autocast)", "auto")
    device: str = _help("auto | cpu | cuda | cuda:N | mps", "auto", resume=True)
    compile: bool = _help("torch.compile forward + loss (slow first step, faster after)",
                          False)
    log_every: int = _help("write a metrics line every N steps", 10, resume=True)
    val_permille: int = _help("documents per thousand held out for validation", 50)
    threads: int = _help("CPU threads for torch; 0 leaves the default", 0, resume=True)
    ema_decay: float = _help("keep an exponential moving average of the weights with this "
                             "decay (e.g. 0.999), saved in every checkpoint; 0 = off", 0.0)

    def __post_init__(self):
        check_types(self)
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (self.grad_accum < 1 or self.batch_size % self.grad_accum == 0,
             "batch_size must divide by grad_accum"),
            (self.seq_len >= 0, "seq_len must be >= 0"),
            (0 < self.lr < 1, "lr must be in (0, 1)"),
            (0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (0 < self.decay_frac <= 1, "decay_frac must be in (0, 1]"),
            (self.optimizer in OPTIMIZER_NAMES, f"optimizer must be one of {OPTIMIZER_NAMES}"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "betas must be in [0, 1)"),
            (0 < self.eps < 1, "eps must be in (0, 1)"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (self.eval_every >= 0 and self.ckpt_every >= 0, "cadences must be >= 0"),
            (self.eval_batches >= 1, "eval_batches must be >= 1"),
            (self.keep_last >= 0 and self.keep_every >= 0, "keep policies must be >= 0"),
            (self.dtype in DTYPES, "dtype: auto, float32 or bfloat16"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (1 <= self.val_permille < 1000, "val_permille must be in [1, 1000) (0 would leave "
                                            "no validation data)"),
            (self.threads >= 0, "threads must be >= 0"),
            (valid_device_name(self.device), f"device must be auto, cpu, cuda, cuda:N or mps, "
                                             f"got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def resumable(cls) -> set[str]:
        """The fields `--resume` may change."""
        return {f.name for f in fields(cls) if f.metadata.get("resume")}


def check_types(config) -> None:
    """Each field holds its annotated type: no 3.7 for an int, no NaN or inf for a float."""
    for f in fields(config):
        value = getattr(config, f.name)
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{f.name} must be a whole number, got {value!r}")
            if abs(value) > MAX_INT:
                raise ValueError(f"{f.name} is out of range: {value}")
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
            setattr(config, f.name, float(value))
        elif kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{f.name} must be true or false, got {value!r}")
        elif kind == "str" and not isinstance(value, str):
            raise ValueError(f"{f.name} must be a string, got {value!r}")


def valid_device_name(name: str) -> bool:
    """The spelling only; whether the device is there is `loop.pick_device`'s question."""
    if name in ("auto", "cpu", "cuda", "mps"):
        return True
    kind, _, index = name.partition(":")
    return kind == "cuda" and index.isdigit()
