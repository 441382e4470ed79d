"""From command-line flags to a training run: preset, tokenizer, run folder, resume.

Settings are layered, later wins: TrainConfig defaults < the preset's "train" block < a
`--config` file (.toml or .json, TrainConfig fields) < flags. A run folder holds run.json (what
is trained: family, model config, data, the merged train config), tokenizer.json, metrics.jsonl
and checkpoints/. `--resume` re-reads run.json, so a resumed run trains the same model on the
same data with the same settings; flags given with --resume must not contradict it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from tinylm.config import (add_dataclass_flags, from_dict, given_flags, load_preset,
                           read_config_file)
from tinylm.errors import TinyLMError
from tinylm.tokenizers.base import write_text_atomic
from tinylm.train.loop import RunSpec, TrainConfig, train

RUN_FILE = "run.json"


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="model preset (see `tinylm info --help`); required for a "
                                    "new run")
    p.add_argument("--data", help="data set name or text file; required for a new run")
    p.add_argument("--data-dir", help="folder holding the data sets")
    p.add_argument("--tokenizer", help="tokenizer.json to use instead of training one")
    p.add_argument("--out", help="run folder (default runs/<preset>-<data>)")
    p.add_argument("--config", help="TOML/JSON file of training settings")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    add_dataclass_flags(p, TrainConfig)


def build_train_config(preset: dict | None, config_file: str | None, flags: dict,
                       base: dict | None = None) -> TrainConfig:
    merged = dict(base or {})
    if preset:
        merged.update(preset.get("train", {}))
    if config_file:
        merged.update(read_config_file(config_file))
    merged.update(flags)
    return from_dict(TrainConfig, merged, where="training settings")


def prepare_tokenizer(preset: dict, data: str, data_dir, tokenizer_path, val_permille: int):
    from tinylm.data.pack import tokenizer_training_texts
    from tinylm.tokenizers import load_tokenizer, train_tokenizer

    if tokenizer_path:
        return load_tokenizer(tokenizer_path)
    spec = preset.get("tokenizer", {"kind": "bytes"})
    texts = tokenizer_training_texts(data, data_dir, val_permille)
    return train_tokenizer(spec["kind"], texts, spec.get("vocab_size"))


def run_training(args) -> Path:
    flags = given_flags(args, TrainConfig)
    out = Path(args.out) if args.out else None
    if args.resume:
        if out is None:
            raise TinyLMError("--resume needs --out RUN_FOLDER")
        return resume_run(out, flags, args.config, not args.no_progress)
    if not args.preset or not args.data:
        raise TinyLMError("a new run needs --preset and --data (or --resume --out RUN)")
    out = out or Path("runs") / f"{args.preset}-{Path(args.data).stem}"
    return new_run(args.preset, args.data, args.data_dir, out, flags, args.config,
                   args.tokenizer, not args.no_progress)


def new_run(preset_name: str, data: str, data_dir, out: Path, flags: dict, config_file=None,
            tokenizer_path=None, progress=True, on_checkpoint=None) -> Path:
    from tinylm.train import distributed

    preset = load_preset(preset_name)
    from tinylm.train.checkpoint import refuse_non_language_model

    refuse_non_language_model(f"preset {preset_name}", preset["family"])
    config = build_train_config(preset, config_file, flags)
    rank, _ = distributed.setup()
    if rank == 0:  # one process prepares the run folder; the others wait, then read it
        prepare_run_folder(preset, preset_name, data, data_dir, out, config, tokenizer_path)
    distributed.barrier()
    return resume_run(out, {}, None, progress, on_checkpoint, fresh=True)


def prepare_run_folder(preset: dict, preset_name: str, data: str, data_dir, out: Path,
                       config: TrainConfig, tokenizer_path=None) -> None:
    if (out / RUN_FILE).exists():
        raise TinyLMError(f"{out} already holds a run; pass --resume to continue it or choose "
                          f"another --out")
    from tinylm.data.sources import resolve_dataset
    from tinylm.models import build_model

    resolve_dataset(data, data_dir)  # fail fast, before training a tokenizer
    tokenizer = prepare_tokenizer(preset, data, data_dir, tokenizer_path, config.val_permille)
    model_config = {**preset["model"], "vocab_size": tokenizer.vocab_size}
    spec = RunSpec(preset["family"], model_config, data, str(data_dir) if data_dir else None,
                   preset_name)
    build_model(spec.family, spec.model_config)  # validate the shape before writing anything
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / "tokenizer.json")
    write_text_atomic(out / RUN_FILE, json.dumps({"spec": asdict(spec),
                                                  "train": asdict(config)}, indent=1))


def resume_run(out: Path, flags: dict, config_file=None, progress=True,
               on_checkpoint=None, fresh: bool = False) -> Path:
    """Continue the run in `out` (or, with fresh=True, start the run just prepared there)."""
    from tinylm.tokenizers import load_tokenizer

    run_file = out / RUN_FILE
    if not run_file.is_file():
        raise TinyLMError(f"nothing to resume: {run_file} not found")
    try:
        saved = json.loads(run_file.read_text())
        spec = RunSpec(**saved["spec"])
    except (ValueError, KeyError, TypeError) as err:
        raise TinyLMError(f"{run_file}: corrupt run file ({err})") from None
    config = build_train_config(None, config_file, flags, base=saved["train"])
    changed = {k for k, v in asdict(config).items() if saved["train"].get(k) != v}
    if changed - {"steps", "device", "threads", "eval_every", "ckpt_every", "log_every",
                  "keep_last", "keep_every"}:
        raise TinyLMError(f"--resume cannot change {sorted(changed)}; start a new run instead")
    from tinylm.train import distributed

    if changed and distributed.is_main():
        saved["train"] = asdict(config)
        write_text_atomic(run_file, json.dumps(saved, indent=1))
    tokenizer = load_tokenizer(out / "tokenizer.json")
    return train(spec, config, tokenizer, out, resume=not fresh, on_checkpoint=on_checkpoint,
                 progress=progress)
