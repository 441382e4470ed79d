"""Checkpoints: a folder of safetensors + JSON, written atomically, verified on load.

    step_00000300/
        model.safetensors   weights only (the unwrapped, uncompiled module: no `_orig_mod.`)
        state.safetensors   optimizer moments and RNG state (training checkpoints only)
        tokenizer.json      the tokenizer, so a checkpoint is usable on its own (absent for
                            a family that is not a language model, such as qkvae)
        meta.json           format/version, family, model config (and its sha256, so an edited
                            `dim` is refused), tokenizer hash, step, tokens seen, metrics,
                            train config, scalar optimizer state, and the sha256 of every
                            other file

The folder is first written as a hidden temporary sibling, every file fsync'ed, then renamed
into place in one step; a killed writer leaves only a `.tmp` folder that loaders ignore and the
next save in that folder removes. A merged checkpoint has no step (`"step": null`).
Loading never unpickles: safetensors and JSON only. Each file's sha256 is checked against
meta.json, so a truncated or edited file is refused with a message that names it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tinylm.errors import TinyLMError
from tinylm.io import (canonical_sha256, remove_path, remove_stale_temps, sha256_file,
                       temp_prefix, write_error)
from tinylm.tokenizers import Tokenizer, tokenizer_from_dict

FORMAT, VERSION = "tinylm-checkpoint", 1
STEP_DIR = re.compile(r"^step_(\d{8})$")


@dataclass
class Checkpoint:
    path: Path
    meta: dict
    model_state: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    train_state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.meta.get("step") or 0)  # a merge has none

    def build_model(self, device="cpu"):
        from tinylm.models import build_model

        model = build_model(self.meta["family"], self.meta["model_config"])
        try:
            missing, unexpected = model.load_state_dict(self.model_state, strict=False)
        except RuntimeError as err:  # shapes that do not fit the config
            first = str(err).strip().splitlines()[-1].strip()
            raise TinyLMError(f"{self.path}: weights do not fit a {self.meta['family']} model "
                              f"of this config ({first})") from None
        if missing or unexpected:
            raise TinyLMError(f"{self.path}: weights do not fit a {self.meta['family']} model of "
                              f"this config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.to(device).eval()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, *, family: str, model_config: dict,
                    model_state: dict[str, torch.Tensor], tokenizer: Tokenizer | None,
                    extra_meta: dict | None = None,
                    train_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint folder atomically; an existing folder at `path` is replaced.
    A disk that refuses the write raises a one-line error; what was there stays."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp"))
    except OSError as err:
        raise write_error(path, err, _kept(path)) from None
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
        save_file(weights, tmp / "model.safetensors", metadata={"format": FORMAT})
        files = ["model.safetensors"]
        if train_state:
            save_file({k: v.contiguous().cpu() for k, v in train_state.items()},
                      tmp / "state.safetensors", metadata={"format": FORMAT})
            files.append("state.safetensors")
        if tokenizer is not None:  # None: an image model (its family is no language model)
            tokenizer.save(tmp / "tokenizer.json")
            files.append("tokenizer.json")
        meta = {"format": FORMAT, "version": VERSION, "family": family,
                "model_config": model_config,
                "config_sha256": config_sha256(family, model_config),
                "tokenizer": tokenizer.describe() if tokenizer is not None else None,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **(extra_meta or {})}
        meta["files"] = {name: sha256_file(tmp / name) for name in files}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        for name in files + ["meta.json"]:
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        if os.environ.get("TINYLM_TEST_STALL_SAVE"):  # lets tests kill -9 mid-save
            time.sleep(float(os.environ["TINYLM_TEST_STALL_SAVE"]))
        if path.exists():  # replace: move the old one aside first so the swap stays atomic
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            remove_path(old)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(path, err, _kept(path)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def config_sha256(family: str, model_config: dict) -> str:
    """What meta.json records so that an edited model config is caught on load."""
    return canonical_sha256({"family": family, "model_config": model_config})


def _kept(path: Path) -> str:
    last = list_checkpoints(path.parent)
    if path.exists():
        return f"{path} is unchanged"
    return f"the last good checkpoint is {last[-1]}" if last else "nothing was replaced"


def read_meta(path: str | Path) -> dict:
    """meta.json of a checkpoint folder, checked to be a tinylm checkpoint."""
    path = Path(path)
    if path.is_file():
        raise TinyLMError(f"{path}: a tinylm checkpoint is a folder (with meta.json and "
                          f"model.safetensors), not a single file")
    if not path.is_dir():
        raise TinyLMError(f"checkpoint not found: {path}")
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise TinyLMError(f"{path}: not a tinylm checkpoint (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise TinyLMError(f"{meta_path}: corrupt checkpoint metadata ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TinyLMError(f"{path}: not a tinylm checkpoint (meta.json has no "
                          f"format={FORMAT!r})")
    if meta.get("version", 0) > VERSION:
        raise TinyLMError(f"{path}: checkpoint format version {meta['version']} is newer than "
                          f"this tinylm understands ({VERSION}); upgrade tinylm")
    for key in ("family", "model_config", "files"):
        if key not in meta:
            raise TinyLMError(f"{path}: checkpoint metadata lacks {key!r}")
    if not isinstance(meta["model_config"], dict) or not isinstance(meta["files"], dict):
        raise TinyLMError(f"{meta_path}: model_config and files must be JSON objects")
    recorded = meta.get("config_sha256")  # absent in checkpoints written before it was added
    if recorded is not None and recorded != config_sha256(meta["family"], meta["model_config"]):
        raise TinyLMError(f"{meta_path}: the model config does not match its recorded sha256 "
                          f"(meta.json was edited after saving)")
    return meta


def _verified(path: Path, meta: dict, name: str) -> Path:
    file = path / name
    if not file.is_file():
        raise TinyLMError(f"{path}: checkpoint file {name} is missing")
    expected = meta["files"].get(name)
    if expected is None:
        raise TinyLMError(f"{path}: meta.json records no sha256 for {name}")
    if sha256_file(file) != expected:
        raise TinyLMError(f"{file}: sha256 mismatch: the file is corrupt or was changed after "
                          f"saving")
    return file


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as err:
        raise TinyLMError(f"{file}: unreadable safetensors file ({err})") from None


def load_checkpoint(path: str | Path, with_train_state: bool = False) -> Checkpoint:
    path = Path(path)
    meta = read_meta(path)
    refuse_non_language_model(path, meta["family"])
    model_state = _load_tensors(_verified(path, meta, "model.safetensors"))
    tok_file = _verified(path, meta, "tokenizer.json")
    try:
        tok_data = json.loads(tok_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise TinyLMError(f"{tok_file}: corrupt tokenizer ({err})") from None
    tokenizer = tokenizer_from_dict(tok_data, where=str(tok_file))
    recorded = (meta.get("tokenizer") or {}).get("hash") if isinstance(meta.get("tokenizer"),
                                                                        dict) else None
    if recorded is not None and recorded != tokenizer.content_hash():
        raise TinyLMError(f"{tok_file}: tokenizer hash {tokenizer.content_hash()[:16]} differs "
                          f"from the {recorded[:16]} recorded in meta.json")
    train_state = {}
    if with_train_state:
        if "state.safetensors" not in meta["files"]:
            raise TinyLMError(f"{path}: holds weights only (no optimizer state); cannot resume "
                              f"training from it")
        train_state = _load_tensors(_verified(path, meta, "state.safetensors"))
    return Checkpoint(path, meta, model_state, tokenizer, train_state)


def refuse_non_language_model(what, family: str) -> None:
    """One line for a checkpoint or preset whose family is not a language model (qkvae):
    train, eval and generate need next-token models."""
    from tinylm.models import families

    record = families().get(family)
    if record is not None and not record.language_model:
        raise TinyLMError(f"{what}: a {family} model is not a language model; the language-model "
                          f"commands (train, eval, generate) cannot use it (see `tinylm image`)")


# --------------------------------------------------------------------------- run folders

def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Finished step checkpoints in a folder, oldest first (temporary folders are skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and STEP_DIR.match(p.name)
             and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def prune_checkpoints(folder: str | Path, keep_last: int, keep_every: int) -> list[Path]:
    """Delete step checkpoints except the newest `keep_last` and every multiple of `keep_every`
    (0 disables either rule; keep_last 0 keeps everything). Returns what was deleted."""
    if keep_last <= 0:
        return []
    ckpts = list_checkpoints(folder)
    protected = set(ckpts[-keep_last:])
    removed = []
    for ckpt in ckpts:
        step = int(STEP_DIR.match(ckpt.name).group(1))
        if ckpt in protected or (keep_every > 0 and step % keep_every == 0):
            continue
        shutil.rmtree(ckpt, ignore_errors=True)
        removed.append(ckpt)
    return removed
