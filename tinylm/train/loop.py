"""The training loop: read it top to bottom.

Order per step, as nanoGPT: set the learning rate, run the micro-steps (forward, backward),
clip, optimizer step, log; then validate and checkpoint on their cadences. Everything a step
depends on is either in the checkpoint (weights, optimizer moments, RNG state, step count) or a
pure function of the step (learning rate, batch), which is why `--resume` is exact: on CPU,
N steps + kill + resume + M steps gives bit-identical weights to N + M uninterrupted steps.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from tinylm.errors import TinyLMError
from tinylm.train.config import TrainConfig  # noqa: F401 - re-exported: loop.TrainConfig
from tinylm.train.checkpoint import (list_checkpoints, load_checkpoint, prune_checkpoints,
                                     save_checkpoint, step_dir_name)
from tinylm.train.optim import build_optimizer, load_optimizer_state, optimizer_state_tensors
from tinylm.train.schedule import lr_at


# --------------------------------------------------------------------------- helpers

def pick_device(name: str) -> torch.device:
    """The device `name` asks for, refused with one line when it is not on this machine."""
    from tinylm.train.config import valid_device_name

    if not valid_device_name(name):
        raise TinyLMError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TinyLMError(f"--device {name} asked for, but no CUDA device is available")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise TinyLMError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                              f"CUDA device(s)")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise TinyLMError("--device mps asked for, but MPS (Apple GPU) is not available here")
    return torch.device(name)


def use_bf16(config: TrainConfig, device: torch.device) -> bool:
    if config.dtype == "bfloat16":
        return True
    if config.dtype == "float32":
        return False
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def lm_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def validation_loss(model, val_tokens, seq_len, batch, n_batches, device, autocast) -> float:
    from tinylm.data.sampler import validation_batches

    model.eval()
    total, count = 0.0, 0
    for x, y in validation_batches(val_tokens, seq_len, batch, n_batches):
        with autocast():
            total += lm_loss(model, x.to(device), y.to(device)).item() * x.numel()
        count += x.numel()
    model.train()
    return total / max(1, count)


class MetricsLog:
    """metrics.jsonl: one JSON object per line. On resume, lines past the resumed step are
    dropped first, so the log reads like one uninterrupted run. A line a kill cut short, or any
    line that is not a JSON object, is dropped too (with a note) rather than failing the
    resume: the log is a record, the checkpoint is the state."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.exists():
            kept, dropped = self._kept_lines(resume_step)
            if dropped:
                print(f"{path}: dropped {dropped} unreadable line(s)")
            from tinylm.io import write_text_atomic

            write_text_atomic(path, "".join(line + "\n" for line in kept))

    def _kept_lines(self, resume_step: int) -> tuple[list[str], int]:
        kept, dropped = [], 0
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                step = record.get("step", 0) if isinstance(record, dict) else None
            except ValueError:
                step = None
            if not isinstance(step, (int, float)) or isinstance(step, bool):
                dropped += 1
            elif step <= resume_step:
                kept.append(line)
        return kept, dropped

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------- the loop

@dataclass
class RunSpec:
    """What a run trains: written once as run.json in the output folder."""
    family: str
    model_config: dict
    data: str
    data_dir: str | None = None
    preset: str | None = None
    curriculum: bool = False        # follow a ranked dataset's order (data/curriculum.py)
    data_kind: str = "text"
    """What `data` names (DATA_KINDS): text documents (pre-training), or chat conversations
    trained on their assistant turns only (`tinylm sft`)."""
    init_from: str | None = None
    """A checkpoint whose weights start the run instead of a random init (grown to the run's
    vocabulary when the run's tokenizer appended tokens to the checkpoint's); with it, the
    starting weights are saved as step 0, so the run's checkpoints include its base."""
    notes: dict | None = None
    """Written into every checkpoint's meta.json (what `tinylm sft` records: base, vocab
    extension, data)."""


@dataclass
class TrainState:
    """Everything the step loop reads and changes, made by `setup_training`.

    What must survive a kill lives in the checkpoint (weights, optimizer moments, RNG state,
    `step`, `tokens_seen`); the batches and the learning rate are pure functions of the step.
    """
    spec: RunSpec
    config: TrainConfig
    tokenizer: object
    out_dir: Path
    model: torch.nn.Module          # the plain module: what is saved and validated
    train_model: torch.nn.Module    # the module that trains (DDP-wrapped with several ranks)
    optimizer: torch.optim.Optimizer
    loss_fn: Callable
    autocast: Callable
    train_tokens: object
    val_tokens: object
    seq_len: int
    device: torch.device
    rank: int = 0
    world: int = 1
    step: int = 0                   # optimizer steps done
    tokens_seen: int = 0
    last_ckpt: Path | None = None
    val_loss: float | None = None
    metrics: MetricsLog | None = None
    on_checkpoint: Callable[[Path], None] | None = None
    ema: dict[str, torch.Tensor] | None = None  # float32 moving average of the weights

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def micro_batch(self) -> int:
        return self.config.batch_size // self.config.grad_accum


def train(spec: RunSpec, config: TrainConfig, tokenizer, out_dir: Path, resume: bool = False,
          on_checkpoint: Callable[[Path], None] | None = None, progress: bool = True) -> Path:
    """Train (or resume) a run in `out_dir`; returns the last checkpoint's folder.

    The step loop, in nanoGPT's order: learning rate, micro-steps, clip + optimizer step, log;
    then validation and a checkpoint on their cadences."""
    from tinylm.train import distributed

    state = setup_training(spec, config, tokenizer, out_dir, resume, on_checkpoint)
    if spec.init_from and state.step == 0:  # the base itself, so merges can reach it
        checkpoint(state, None)
    bar = None
    if progress and state.is_main:
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=state.step, unit="step", dynamic_ncols=True)
    say = bar.write if bar else (functools.partial(print, flush=True) if state.is_main
                                 else (lambda *a, **k: None))
    window = Throughput()
    state.train_model.train()
    for step in range(state.step, config.steps):
        lr = set_learning_rate(state, step)
        loss, grad_norm = optimizer_step(state, step)
        state.step, state.tokens_seen = step + 1, state.tokens_seen + window.add(state)
        check_finite(state, loss)
        done, is_last = state.step, state.step == config.steps
        if done % config.log_every == 0 or is_last:
            speed = window.rate()
            state.metrics.write({"step": done, "loss": loss, "lr": lr,
                                 "tokens": state.tokens_seen, "tok_per_s": speed,
                                 "grad_norm": None if grad_norm is None else float(grad_norm)})
            if bar:
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{speed:,.0f}")
        if bar:
            bar.update(1)
        if (config.eval_every and done % config.eval_every == 0) or is_last:
            validate(state, loss, say)
        if (config.ckpt_every and done % config.ckpt_every == 0) or is_last:
            checkpoint(state, loss)
            window.restart()  # checkpoint time is not training time
    if bar:
        bar.close()
    distributed.teardown()
    return state.last_ckpt or list_checkpoints(out_dir / "checkpoints")[-1]


# --------------------------------------------------------------------------- setup

def setup_training(spec: RunSpec, config: TrainConfig, tokenizer, out_dir: Path, resume: bool,
                   on_checkpoint=None) -> TrainState:
    """Process group, device, model (seeded), token caches, optimizer, and the resumed state
    when `resume` finds a checkpoint: a TrainState ready for the step loop."""
    from tinylm.models import build_model
    from tinylm.train import distributed

    rank, world = distributed.setup()
    device = pick_device(config.device) if world == 1 else distributed.device_for(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.batch_size % (world * config.grad_accum):
        raise TinyLMError(f"batch_size {config.batch_size} must divide by processes x grad_accum "
                          f"= {world * config.grad_accum}")
    torch.manual_seed(config.seed)
    model = build_model(spec.family, spec.model_config)
    if spec.init_from and not (resume and list_checkpoints(out_dir / "checkpoints")):
        model.load_state_dict(initial_weights(spec))  # a resume reads its own checkpoint
    seq_len = config.seq_len or model.config.context_len
    if seq_len > model.config.context_len:
        raise TinyLMError(f"seq_len {seq_len} exceeds the model's context {model.config.context_len}")
    train_tokens, val_tokens = _token_caches(spec, config, tokenizer, rank == 0)
    model.to(device)
    _first_stage(spec, model, train_tokens, config, seq_len, out_dir, resume, rank == 0)
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay,
                                (config.beta1, config.beta2), config.eps, device.type)
    bf16 = use_bf16(config, device)
    state = TrainState(
        spec, config, tokenizer, out_dir, model,
        train_model=model, optimizer=optimizer,
        # --compile compiles forward + cross-entropy as one graph, so the loss fuses with the
        # head (about 3% faster a step than compiling the model alone, Glint-1.3 shape on CPU)
        loss_fn=torch.compile(lm_loss) if config.compile else lm_loss,
        autocast=(lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16
        else contextlib.nullcontext,
        train_tokens=train_tokens, val_tokens=val_tokens, seq_len=seq_len, device=device,
        rank=rank, world=world, on_checkpoint=on_checkpoint)
    if config.ema_decay:  # starts at the initial weights, as torch's AveragedModel does
        state.ema = {k: v.detach().float().clone() for k, v in model.state_dict().items()
                     if v.is_floating_point()}
    _restore(state, resume)
    if world > 1:  # wrapped after the restore, as DDP broadcasts rank 0's weights when built
        state.train_model = distributed.wrap(model, device)
    state.metrics = MetricsLog(out_dir / "metrics.jsonl", state.step if resume else None,
                               state.is_main)
    return state


def initial_weights(spec: RunSpec) -> dict[str, torch.Tensor]:
    """The weights of `spec.init_from`, with vocabulary rows appended when the run's vocabulary
    is the checkpoint's plus appended tokens (`tinylm.instruct.vocab`)."""
    from tinylm.instruct.vocab import extend_vocab

    base = load_checkpoint(spec.init_from)
    if base.meta["family"] != spec.family:
        raise TinyLMError(f"{spec.init_from}: a {base.meta['family']} model, but the run "
                          f"trains a {spec.family} model")
    added = spec.model_config["vocab_size"] - base.meta["model_config"]["vocab_size"]
    if added < 0:
        raise TinyLMError(f"{spec.init_from}: vocabulary larger than the run's")
    config, state, _ = extend_vocab(spec.family, base.meta["model_config"], base.model_state,
                                    added)
    if config != spec.model_config:
        raise TinyLMError(f"{spec.init_from}: its model config no longer matches the run's")
    return state


def _token_caches(spec: RunSpec, config: TrainConfig, tokenizer, is_main: bool):
    """(train, val) tokens: arrays, or `MixedTokens` for a mixture of sources; rank 0 builds
    the caches (one per source and split), the other ranks then read them. Another data kind
    (DATA_KINDS) makes its own (train, val) sources."""
    import importlib

    if spec.data_kind != "text":
        if spec.data_kind not in DATA_KINDS:
            raise TinyLMError(f"unknown data kind {spec.data_kind!r}; known: text, "
                              f"{', '.join(DATA_KINDS)}")
        module, _, function = DATA_KINDS[spec.data_kind].partition(":")
        return getattr(importlib.import_module(module), function)(spec, config, tokenizer)
    return _text_token_caches(spec, config, tokenizer, is_main)


# Data kinds besides pre-training text -> "module:function(spec, config, tokenizer)" returning
# (train, val) sources with `train_batch` and `validation_batches` (see data/sampler.py).
DATA_KINDS = {"chat": "tinylm.instruct.data:chat_token_sources"}


def _text_token_caches(spec: RunSpec, config: TrainConfig, tokenizer, is_main: bool):
    import numpy as np

    from tinylm.data.mixture import MixedTokens, parse_mixture
    from tinylm.data.pack import load_or_build
    from tinylm.train import distributed

    log = print if is_main else (lambda *a, **k: None)
    sources = parse_mixture(spec.data)
    packed: dict[str, list] = {}
    for turn in ("main", "others"):
        if (turn == "main") == is_main:
            for split in ("train", "val"):
                packed[split] = [load_or_build(name, split, tokenizer, spec.data_dir,
                                               val_permille=config.val_permille, log=log).tokens
                                 for name, _ in sources]
        distributed.barrier()
    if len(sources) == 1 and spec.curriculum:
        from tinylm.data.curriculum import CurriculumTokens

        return CurriculumTokens(packed["train"][0], config.steps), packed["val"][0]
    if len(sources) == 1:
        return packed["train"][0], packed["val"][0]
    names, weights = [n for n, _ in sources], np.array([w for _, w in sources])
    return (MixedTokens(names, packed["train"], weights),
            MixedTokens(names, packed["val"], weights))


def _first_stage(spec, model, train_tokens, config, seq_len, out_dir, resume, is_main) -> None:
    """The family's first stage (`Family.prepare_training`: BLT trains its patcher), run on a
    fresh start only: a resumed run gets its result back from the checkpoint's weights."""
    from tinylm.models import get_family

    prepare = get_family(spec.family).prepare_training
    if prepare is None or (resume and list_checkpoints(out_dir / "checkpoints")):
        return
    prepare(model, train_tokens, config, seq_len, print if is_main else (lambda *a, **k: None))


def _restore(state: TrainState, resume: bool) -> None:
    """Load the newest checkpoint's weights, optimizer, RNG and counters when resuming."""
    ckpt_dir = state.out_dir / "checkpoints"
    existing = list_checkpoints(ckpt_dir)
    if existing and not resume:
        raise TinyLMError(f"{ckpt_dir} already holds checkpoints; pass --resume to continue "
                          f"or choose another --out")
    if not (resume and existing):
        return
    ckpt = load_checkpoint(existing[-1], with_train_state=True)
    if ckpt.tokenizer.content_hash() != state.tokenizer.content_hash():
        raise TinyLMError(f"{existing[-1]}: was trained with another tokenizer")
    state.model.load_state_dict(ckpt.model_state)
    load_optimizer_state(state.optimizer, ckpt.train_state)
    torch.set_rng_state(ckpt.train_state["rng.torch"])
    if state.ema is not None:
        state.ema = {k: ckpt.train_state[f"ema.{k}"].to(state.device).float()
                     for k in state.ema}
    state.step, state.tokens_seen = ckpt.step, int(ckpt.meta["tokens_seen"])
    state.last_ckpt = existing[-1]
    if state.is_main:
        print(f"resuming from {existing[-1].name} (step {state.step})")


# --------------------------------------------------------------------------- one step

def set_learning_rate(state: TrainState, step: int) -> float:
    c = state.config
    lr = lr_at(step, peak=c.lr, total=c.steps, warmup=c.warmup_steps, schedule=c.schedule,
               min_lr_ratio=c.min_lr_ratio, decay_frac=c.decay_frac)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    return lr


def optimizer_step(state: TrainState, step: int) -> tuple[float, torch.Tensor | None]:
    """The micro-steps (forward, backward; gradients synced on the last one only), clipping
    and the optimizer step; returns the step's loss (mean over ranks) and the gradient norm."""
    from tinylm.data.sampler import train_batch
    from tinylm.train import distributed

    c, model = state.config, state.train_model
    step_loss = 0.0
    for micro in range(c.grad_accum):
        x, y = train_batch(state.train_tokens, state.seq_len, state.micro_batch, c.seed, step,
                           micro, state.rank, state.world)
        x, y = x.to(state.device, non_blocking=True), y.to(state.device, non_blocking=True)
        sync = contextlib.nullcontext() if micro == c.grad_accum - 1 or state.world == 1 \
            else model.no_sync()
        with sync, state.autocast():
            loss = state.loss_fn(model, x, y) / c.grad_accum
        loss.backward()
        step_loss += loss.detach()
    grad_norm = None
    if c.grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), c.grad_clip)
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    if state.ema is not None:
        update_ema(state.ema, state.model, c.ema_decay)
    loss = distributed.mean_scalar(step_loss) if state.world > 1 else float(step_loss)
    return loss, grad_norm


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weights, in float32, every optimizer step (the EMA
    baseline of the tournament reads it from the checkpoint)."""
    for name, value in model.state_dict().items():
        if name in ema:
            ema[name].lerp_(value.float(), 1.0 - decay)


def check_finite(state: TrainState, loss: float) -> None:
    if not math.isfinite(loss):
        raise TinyLMError(f"loss became {loss} at step {state.step}; lower --lr or raise "
                          f"--warmup-steps (last good checkpoint: {state.last_ckpt})")


class Throughput:
    """Tokens per second over the steps since the last log line (or checkpoint)."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self.start, self.tokens = time.perf_counter(), 0

    def add(self, state: TrainState) -> int:
        tokens = state.config.batch_size * state.seq_len
        self.tokens += tokens
        return tokens

    def rate(self) -> float:
        speed = self.tokens / max(time.perf_counter() - self.start, 1e-9)
        self.restart()
        return speed


def validate(state: TrainState, loss: float, say) -> None:
    """Validation loss on a fixed set of batches, sized independently of the process count,
    so every rank scores the same set."""
    state.val_loss = validation_loss(state.model, state.val_tokens, state.seq_len,
                                     state.micro_batch, state.config.eval_batches,
                                     state.device, state.autocast)
    state.metrics.write({"step": state.step, "val_loss": state.val_loss,
                         "tokens": state.tokens_seen})
    say(f"step {state.step}: train loss {loss:.4f}  val loss {state.val_loss:.4f}")


def _family_meta(model) -> dict:
    """What the family record adds to a checkpoint's meta.json (`Family.checkpoint_meta`)."""
    from tinylm.models import get_family

    extra = get_family(model.family).checkpoint_meta
    return extra(model) if extra is not None else {}


def checkpoint(state: TrainState, loss: float) -> None:
    """Rank 0 saves (atomically) and prunes; every rank waits for it."""
    from tinylm.train import distributed

    if state.is_main:
        ckpt_dir = state.out_dir / "checkpoints"
        state.last_ckpt = save_checkpoint(
            ckpt_dir / step_dir_name(state.step), family=state.spec.family,
            model_config=asdict(state.model.config), model_state=state.model.state_dict(),
            tokenizer=state.tokenizer,
            train_state={**optimizer_state_tensors(state.optimizer),
                         "rng.torch": torch.get_rng_state(),
                         **{f"ema.{k}": v for k, v in (state.ema or {}).items()}},
            extra_meta={"step": state.step, "tokens_seen": state.tokens_seen,
                        "metrics": {"train_loss": loss, "val_loss": state.val_loss},
                        "train_config": asdict(state.config), "data": state.spec.data,
                        "preset": state.spec.preset, **(state.spec.notes or {}),
                        **_family_meta(state.model)})
        prune_checkpoints(ckpt_dir, state.config.keep_last, state.config.keep_every)
        if state.on_checkpoint:
            state.on_checkpoint(state.last_ckpt)
    distributed.barrier()
