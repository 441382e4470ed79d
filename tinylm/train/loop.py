"""The training loop: read it top to bottom.

Order per step, as nanoGPT: set the learning rate, run the micro-steps (forward, backward),
clip, optimizer step, log; then validate and checkpoint on their cadences. Everything a step
depends on is either in the checkpoint (weights, optimizer moments, RNG state, step count) or a
pure function of the step (learning rate, batch), which is why `--resume` is exact: on CPU,
N steps + kill + resume + M steps gives bit-identical weights to N + M uninterrupted steps.
"""

from __future__ import annotations

import contextlib
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


def train(spec: RunSpec, config: TrainConfig, tokenizer, out_dir: Path, resume: bool = False,
          on_checkpoint: Callable[[Path], None] | None = None, progress: bool = True) -> Path:
    """Train (or resume) a run in `out_dir`; returns the last checkpoint's folder."""
    from tinylm.data.pack import load_or_build
    from tinylm.data.sampler import train_batch
    from tinylm.models import build_model
    from tinylm.train import distributed

    rank, world = distributed.setup()
    device = pick_device(config.device) if world == 1 else distributed.device_for(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    ckpt_dir = out_dir / "checkpoints"
    is_main = rank == 0
    if config.batch_size % (world * config.grad_accum):
        raise TinyLMError(f"batch_size {config.batch_size} must divide by processes x grad_accum "
                          f"= {world * config.grad_accum}")

    torch.manual_seed(config.seed)
    model = build_model(spec.family, spec.model_config)
    seq_len = config.seq_len or model.config.context_len
    if seq_len > model.config.context_len:
        raise TinyLMError(f"seq_len {seq_len} exceeds the model's context {model.config.context_len}")
    log = print if is_main else (lambda *a, **k: None)
    packed = {}
    for turn in ("main", "others"):  # rank 0 builds the token caches, the others then read them
        if (turn == "main") == is_main:
            for split in ("train", "val"):
                packed[split] = load_or_build(spec.data, split, tokenizer, spec.data_dir,
                                              val_permille=config.val_permille, log=log).tokens
        distributed.barrier()
    train_tokens, val_tokens = packed["train"], packed["val"]

    model.to(device)
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay,
                                (config.beta1, config.beta2), config.eps, device.type)
    start_step, tokens_seen = 0, 0
    existing = list_checkpoints(ckpt_dir)
    if resume and existing:
        ckpt = load_checkpoint(existing[-1], with_train_state=True)
        if ckpt.tokenizer.content_hash() != tokenizer.content_hash():
            raise TinyLMError(f"{existing[-1]}: was trained with another tokenizer")
        model.load_state_dict(ckpt.model_state)
        load_optimizer_state(optimizer, ckpt.train_state)
        torch.set_rng_state(ckpt.train_state["rng.torch"])
        start_step, tokens_seen = ckpt.step, int(ckpt.meta["tokens_seen"])
        log(f"resuming from {existing[-1].name} (step {start_step})")
    elif existing and not resume:
        raise TinyLMError(f"{ckpt_dir} already holds checkpoints; pass --resume to continue "
                          f"or choose another --out")

    train_model = distributed.wrap(model, device) if world > 1 else model
    # --compile compiles forward + cross-entropy as one graph, so the loss fuses with the head
    # (about 3% faster a step than compiling the model alone, Glint-1.3 shape on CPU)
    loss_fn = torch.compile(lm_loss) if config.compile else lm_loss
    bf16 = use_bf16(config, device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 \
        else contextlib.nullcontext
    metrics = MetricsLog(out_dir / "metrics.jsonl", start_step if resume else None, is_main)
    tokens_per_step = config.batch_size * seq_len

    bar = None
    if progress and is_main:
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=start_step, unit="step", dynamic_ncols=True)
    last_ckpt = existing[-1] if (resume and existing) else None
    window_start, window_tokens = time.perf_counter(), 0
    val_loss = None
    train_model.train()

    for step in range(start_step, config.steps):
        lr = lr_at(step, peak=config.lr, total=config.steps, warmup=config.warmup_steps,
                   schedule=config.schedule, min_lr_ratio=config.min_lr_ratio,
                   decay_frac=config.decay_frac)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for micro in range(config.grad_accum):
            x, y = train_batch(train_tokens, seq_len, config.batch_size // config.grad_accum,
                               config.seed, step, micro, rank, world)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sync = contextlib.nullcontext() if micro == config.grad_accum - 1 or world == 1 \
                else train_model.no_sync()
            with sync, autocast():
                loss = loss_fn(train_model, x, y) / config.grad_accum
            loss.backward()
            step_loss += loss.detach()
        grad_norm = None
        if config.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        tokens_seen += tokens_per_step
        window_tokens += tokens_per_step
        loss_value = distributed.mean_scalar(step_loss) if world > 1 else float(step_loss)
        if not math.isfinite(loss_value):
            raise TinyLMError(f"loss became {loss_value} at step {done}; lower --lr or raise "
                              f"--warmup-steps (last good checkpoint: {last_ckpt})")

        if done % config.log_every == 0 or done == config.steps:
            elapsed = time.perf_counter() - window_start
            speed = window_tokens / max(elapsed, 1e-9)
            metrics.write({"step": done, "loss": loss_value, "lr": lr, "tokens": tokens_seen,
                           "tok_per_s": speed,
                           "grad_norm": None if grad_norm is None else float(grad_norm)})
            if bar:
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", tok_s=f"{speed:,.0f}")
            window_start, window_tokens = time.perf_counter(), 0
        if bar:
            bar.update(1)

        is_last = done == config.steps
        if (config.eval_every and done % config.eval_every == 0) or is_last:
            # every rank scores the same fixed set, sized independently of the process count
            val_loss = validation_loss(model, val_tokens, seq_len,
                                       config.batch_size // config.grad_accum,
                                       config.eval_batches, device, autocast)
            metrics.write({"step": done, "val_loss": val_loss, "tokens": tokens_seen})
            message = f"step {done}: train loss {loss_value:.4f}  val loss {val_loss:.4f}"
            if bar:
                bar.write(message)
            elif is_main:
                print(message, flush=True)
        if (config.ckpt_every and done % config.ckpt_every == 0) or is_last:
            if is_main:
                last_ckpt = save_checkpoint(
                    ckpt_dir / step_dir_name(done), family=spec.family,
                    model_config=asdict(model.config), model_state=model.state_dict(),
                    tokenizer=tokenizer,
                    train_state={**optimizer_state_tensors(optimizer),
                                 "rng.torch": torch.get_rng_state()},
                    extra_meta={"step": done, "tokens_seen": tokens_seen,
                                "metrics": {"train_loss": loss_value, "val_loss": val_loss},
                                "train_config": asdict(config), "data": spec.data,
                                "preset": spec.preset})
                prune_checkpoints(ckpt_dir, config.keep_last, config.keep_every)
                if on_checkpoint:
                    on_checkpoint(last_ckpt)
            distributed.barrier()
            window_start = time.perf_counter()  # do not count checkpoint time as training
            window_tokens = 0
    if bar:
        bar.close()
    distributed.teardown()
    if last_ckpt is None:
        last_ckpt = list_checkpoints(ckpt_dir)[-1]
    return last_ckpt
