"""From command-line flags to a training run: preset, tokenizer, run folder, resume.

Settings are layered, later wins: TrainConfig defaults < the preset's "train" block < a
`--config` file (.toml or .json, TrainConfig fields) < flags. A run folder holds run.json (what
is trained: family, model config, data, the merged train config), tokenizer.json, metrics.jsonl
and checkpoints/. `--resume` re-reads run.json, so a resumed run trains the same model on the
same data with the same settings; flags given with --resume must not contradict it (the
fields TrainConfig marks `resume` may change).

Nothing is written before everything is checked: settings, device, data (both splits must get
documents). The folder is locked while training (`tinylm.lock`). A start that fails before its
first checkpoint removes what it wrote, so it can simply be started again; a folder holding a
run.json but no checkpoint (a start killed early) is started afresh.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from tinylm.config import (add_dataclass_flags, from_dict, given_flags, load_preset,
                           read_config_file)
from tinylm.errors import TinyLMError
from tinylm.io import is_checkpoint_folder, remove_stale_temps, write_text_atomic
from tinylm.lock import LOCK_FILE, run_lock
from tinylm.train.config import TrainConfig

RUN_FILE = "run.json"
RUN_FILES = (RUN_FILE, "tokenizer.json", "metrics.jsonl")  # what a start writes


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
    p.add_argument("--curriculum", action="store_true", help="with --data DATASET_DIR ranked "
                   "by `tinylm data rank`: easy rows first (competence-based sampling)")
    p.add_argument("--allow-contaminated", action="store_true", help="train on a dataset "
                   "whose rows overlap benchmark test data (refused by default)")
    add_dataclass_flags(p, TrainConfig)


def build_train_config(preset: dict | None, config_file: str | None, flags: dict,
                       base: dict | None = None) -> TrainConfig:
    merged = dict(base or {})
    if preset:
        merged.update(preset.get("train", {}))
    if config_file:
        settings = _config_settings(config_file)
        if not isinstance(settings, dict):
            raise TinyLMError(f"{config_file}: expected a table of settings (a JSON object), "
                              f"got a {type(settings).__name__}")
        merged.update(settings)
    merged.update(flags)
    return from_dict(TrainConfig, merged, where="training settings")


def _config_settings(config_file: str):
    """--config FILE (.toml or .json), or the JSON object itself: --config '{"steps": 10}'."""
    if str(config_file).lstrip().startswith("{"):
        try:
            return json.loads(config_file)
        except ValueError as err:
            raise TinyLMError(f"--config: not a JSON object ({err})") from None
    return read_config_file(config_file)


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
                   args.tokenizer, not args.no_progress,
                   curriculum=getattr(args, "curriculum", False),
                   allow_contaminated=getattr(args, "allow_contaminated", False))


def new_run(preset_name: str, data: str, data_dir, out: Path, flags: dict, config_file=None,
            tokenizer_path=None, progress=True, on_checkpoint=None,
            model_overrides: dict | None = None, curriculum: bool = False,
            allow_contaminated: bool = False) -> Path:
    """Start a run in `out`; `model_overrides` changes fields of the preset's model config
    (a recipe's [model] config, e.g. a longer context). A dataset folder as `data` must pass
    the contamination gate (`data/curate/training.py`) unless `allow_contaminated`;
    `curriculum` follows a ranked dataset's order."""
    from tinylm.train import distributed

    out = Path(out)
    preset = load_preset(preset_name)
    from tinylm.train.checkpoint import refuse_non_language_model

    if model_overrides:
        preset["model"] = {**preset["model"], **model_overrides}
    refuse_non_language_model(f"preset {preset_name}", preset["family"])
    config = build_train_config(preset, config_file, flags)
    context = preset.get("model", {}).get("context_len")
    if context and config.seq_len > context:
        raise TinyLMError(f"seq_len {config.seq_len} exceeds the model's context {context}")
    check_out_folder(out)
    from tinylm.data.curate.training import check_training_data

    data = check_training_data(data, data_dir, curriculum, allow_contaminated)
    preflight(config, data, data_dir, tokenizer_path)
    rank, _ = distributed.setup()
    created = not out.exists()
    try:
        with run_lock(out):
            wrote = False
            try:
                if rank == 0:  # one process prepares the folder; the others wait, then read it
                    prepare_run_folder(preset, preset_name, data, data_dir, out, config,
                                       tokenizer_path, curriculum)
                wrote = True
                distributed.barrier()
                return resume_run(out, {}, None, progress, on_checkpoint, fresh=True)
            except BaseException:
                if rank == 0:
                    undo_failed_start(out, wrote)
                raise
    except BaseException:
        if created and rank == 0 and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # the folder this start made, and nothing in it
        raise


def check_out_folder(out: Path) -> None:
    """A new run goes into a missing or empty folder, or one of our own runs (see below)."""
    if out.exists() and not out.is_dir():
        raise TinyLMError(f"--out {out} is a file; a run folder is a folder")
    if not out.is_dir() or (out / RUN_FILE).is_file():
        return
    if is_checkpoint_folder(out):
        raise TinyLMError(f"--out {out} is a checkpoint, not a run folder; choose another --out")
    extra = foreign_files_of_run(out)
    if extra:
        raise TinyLMError(f"--out {out} holds files tinylm did not write ({', '.join(extra[:3])}"
                          f"); choose an empty or new folder")


def foreign_files_of_run(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()
                  if p.name not in (*RUN_FILES, LOCK_FILE, "checkpoints", "pipeline.json"))


def preflight(config: TrainConfig, data: str, data_dir, tokenizer_path=None) -> None:
    """Everything a start can check before it writes anything."""
    from tinylm.data.pack import check_splits
    from tinylm.tokenizers import load_tokenizer
    from tinylm.train.loop import pick_device

    pick_device(config.device)
    if tokenizer_path:
        load_tokenizer(tokenizer_path)
    check_splits(data, data_dir, config.val_permille)


def prepare_run_folder(preset: dict, preset_name: str, data: str, data_dir, out: Path,
                       config: TrainConfig, tokenizer_path=None,
                       curriculum: bool = False) -> None:
    from tinylm.train.checkpoint import list_checkpoints

    if (out / RUN_FILE).exists():
        if list_checkpoints(out / "checkpoints"):
            raise TinyLMError(f"{out} already holds a run; pass --resume to continue it or "
                              f"choose another --out")
        print(f"{out}: an earlier start made no checkpoint; starting it afresh")
        undo_failed_start(out, wrote=True)
    from tinylm.data.mixture import parse_mixture
    from tinylm.data.sources import resolve_dataset
    from tinylm.models import build_model
    from tinylm.train.loop import RunSpec

    for source, _ in parse_mixture(data):  # fail fast, before training a tokenizer
        resolve_dataset(source, data_dir)
    tokenizer = prepare_tokenizer(preset, data, data_dir, tokenizer_path, config.val_permille)
    model_config = {**preset["model"], "vocab_size": tokenizer.vocab_size}
    spec = RunSpec(preset["family"], model_config, data, str(data_dir) if data_dir else None,
                   preset_name, curriculum)
    build_model(spec.family, spec.model_config)  # validate the shape before writing anything
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / "tokenizer.json")
    write_text_atomic(out / RUN_FILE, json.dumps({"spec": asdict(spec),
                                                  "train": asdict(config)}, indent=1))


def undo_failed_start(out: Path, wrote: bool) -> None:
    """Remove what a start wrote when it made no checkpoint, so it can simply be retried."""
    from tinylm.train.checkpoint import list_checkpoints

    ckpts = out / "checkpoints"
    if not wrote or list_checkpoints(ckpts):
        return
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    if ckpts.is_dir():
        remove_stale_temps(ckpts)
        if not any(ckpts.iterdir()):
            ckpts.rmdir()


def resume_run(out: Path, flags: dict, config_file=None, progress=True,
               on_checkpoint=None, fresh: bool = False) -> Path:
    """Continue the run in `out` (or, with fresh=True, start the run just prepared there)."""
    from tinylm.tokenizers import load_tokenizer
    from tinylm.train.loop import RunSpec, pick_device, train

    out = Path(out)
    run_file = out / RUN_FILE
    if not run_file.is_file():
        raise TinyLMError(f"nothing to resume: {run_file} not found")
    with run_lock(out):
        try:
            saved = json.loads(run_file.read_text())
            spec = RunSpec(**saved["spec"])
            saved_train = dict(saved["train"])
        except (ValueError, KeyError, TypeError) as err:
            raise TinyLMError(f"{run_file}: corrupt run file ({err})") from None
        config = build_train_config(None, config_file, flags, base=saved_train)
        # a setting the run file lacks (added in a later tinylm) keeps its default: unchanged
        defaults = asdict(TrainConfig())
        changed = {k for k, v in asdict(config).items()
                   if saved_train.get(k, defaults[k]) != v}
        if changed - TrainConfig.resumable():
            raise TinyLMError(f"--resume cannot change {sorted(changed - TrainConfig.resumable())}"
                              f"; start a new run instead")
        pick_device(config.device)  # before run.json is rewritten
        from tinylm.train import distributed

        if changed and distributed.is_main():
            saved["train"] = asdict(config)
            write_text_atomic(run_file, json.dumps(saved, indent=1))
        if distributed.is_main():
            remove_stale_temps(out / "checkpoints")  # a save killed last time
        tokenizer = load_tokenizer(out / "tokenizer.json")
        return train(spec, config, tokenizer, out, resume=not fresh,
                     on_checkpoint=on_checkpoint, progress=progress)
