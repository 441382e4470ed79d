"""`tinylm sft CKPT --data ...`: supervised fine-tuning on ChatML conversations, as a training
run like any other.

The run is an ordinary run folder (run.json, tokenizer.json, metrics.jsonl, checkpoints/),
trained by the one training loop (`tinylm.train.loop`): same checkpoints, progress bar, metrics
log, exact `--resume`, DDP. What makes it SFT is in its RunSpec: `data_kind="chat"` (the loop
reads packed conversation rows whose targets outside assistant turns are ignored,
`tinylm.instruct.data`) and `init_from=CKPT` (the base weights start the run, grown by the
ChatML markers when the tokenizer is `bpe` or `unigram`, `tinylm.instruct.vocab`). The base is
saved as step 0, so the run's checkpoints are the base plus the SFT steps: `tinylm tournament
RUN --objective instruct` then SLERPs base x instruct among the rest.

Settings layer as in `tinylm train`: TrainConfig defaults < SFT_DEFAULTS < --config < flags.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tinylm.errors import TinyLMError

# Fine-tuning starts from trained weights: a short warmup, a lower peak than pre-training
# (the tiny presets pre-train at 1.5e-3 to 3e-3), and cadences that fit a few hundred steps.
SFT_DEFAULTS = {"steps": 200, "lr": 1e-3, "warmup_steps": 10, "schedule": "cosine",
                "batch_size": 16, "eval_every": 50, "ckpt_every": 50, "weight_decay": 0.0}


def add_sft_arguments(p) -> None:
    from tinylm.config import add_dataclass_flags
    from tinylm.train.config import TrainConfig

    p.add_argument("checkpoint", nargs="?", help="the base checkpoint (a new run)")
    p.add_argument("--data", help="instruct data: gsm8k, self-instruct, a .jsonl file with a "
                                  "messages field, or hf:NAME; comma-separated for several")
    p.add_argument("--data-dir", help="folder holding the data sets (instruct/...)")
    p.add_argument("--out", help="run folder (default runs/sft-<checkpoint name>)")
    p.add_argument("--config", help="TOML/JSON file of training settings")
    p.add_argument("--resume", action="store_true", help="continue the SFT run in --out")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    add_dataclass_flags(p, TrainConfig)


def run_sft(args) -> Path:
    from tinylm.config import given_flags
    from tinylm.train.config import TrainConfig
    from tinylm.train.session import resume_run

    flags = given_flags(args, TrainConfig)
    if args.resume:
        if not args.out:
            raise TinyLMError("--resume needs --out RUN_FOLDER")
        return resume_run(Path(args.out), flags, args.config, not args.no_progress)
    if not args.checkpoint or not args.data:
        raise TinyLMError("a new SFT run needs a base CHECKPOINT and --data (or --resume "
                          "--out RUN)")
    out = Path(args.out) if args.out else Path("runs") / f"sft-{Path(args.checkpoint).name}"
    return new_sft_run(Path(args.checkpoint), args.data, args.data_dir, out, flags,
                       args.config, not args.no_progress)


def plan_sft_run(base_path: Path, data: str, data_dir, config):
    """Everything checked and decided before anything is written: (spec, tokenizer)."""
    from tinylm.instruct.data import read_conversations, rows_for
    from tinylm.io import is_checkpoint_folder

    if base_path.is_dir() and not is_checkpoint_folder(base_path):  # torch-free, so fast
        raise TinyLMError(f"{base_path}: not a tinylm checkpoint (no tinylm meta.json)")
    conversations, fingerprint = read_conversations(data, data_dir)  # torch-free: first
    from tinylm.instruct.vocab import chat_tokenizer, vocab_axes
    from tinylm.train.checkpoint import load_checkpoint
    from tinylm.train.loop import RunSpec, pick_device

    pick_device(config.device)
    base = load_checkpoint(base_path)  # refuses a non-checkpoint and non-language models
    base_config = base.meta["model_config"]
    context = int(base_config["context_len"])
    if config.seq_len > context:
        raise TinyLMError(f"seq_len {config.seq_len} exceeds the model's context {context}")
    tokenizer, added = chat_tokenizer(base.tokenizer)
    rows_for(conversations, fingerprint, tokenizer, config.seq_len or context,
             config.val_permille)
    model_config = {**base_config, "vocab_size": tokenizer.vocab_size}
    extension = None
    if added:
        axes = vocab_axes(base.meta["family"], base_config, len(added))
        from tinylm.instruct.vocab import INIT_NOTE

        extension = {"from": base_config["vocab_size"], "to": tokenizer.vocab_size,
                     "added": {m: tokenizer.encode(m)[0] for m in added},
                     "tensors": sorted(axes), "init": INIT_NOTE}
    notes = {"sft": {"base": str(base_path.resolve()), "base_step": base.meta.get("step"),
                     "base_model_sha256": base.meta["files"]["model.safetensors"],
                     "data": data, "data_sha256": fingerprint,
                     "loss": "assistant turns only (content and <|im_end|>)",
                     "vocab_extension": extension}}
    spec = RunSpec(base.meta["family"], model_config, data,
                   str(data_dir) if data_dir else None, base.meta.get("preset"),
                   data_kind="chat", init_from=str(base_path.resolve()), notes=notes)
    return spec, tokenizer


def new_sft_run(base_path: Path, data: str, data_dir, out: Path, flags: dict,
                config_file=None, progress: bool = True) -> Path:
    from tinylm.io import write_text_atomic
    from tinylm.lock import run_lock
    from tinylm.train.session import (
        RUN_FILE,
        build_train_config,
        check_out_folder,
        resume_run,
        undo_failed_start,
    )

    config = build_train_config({"train": SFT_DEFAULTS}, config_file, flags)
    check_out_folder(out)
    if (out / RUN_FILE).is_file():
        raise TinyLMError(f"{out} already holds a run; pass --resume to continue it or choose "
                          f"another --out")
    spec, tokenizer = plan_sft_run(base_path, data, data_dir, config)
    created = not out.exists()
    try:
        with run_lock(out):
            wrote = False
            try:
                tokenizer.save(out / "tokenizer.json")
                write_text_atomic(out / RUN_FILE, json.dumps(
                    {"spec": asdict(spec), "train": asdict(config)}, indent=1))
                wrote = True
                extension = spec.notes["sft"]["vocab_extension"]
                if extension:
                    print(f"vocabulary {extension['from']} -> {extension['to']}: added "
                          f"{', '.join(extension['added'])}; new rows: {extension['init']}")
                return resume_run(out, {}, None, progress, fresh=True)
            except BaseException:
                undo_failed_start(out, wrote)
                raise
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
