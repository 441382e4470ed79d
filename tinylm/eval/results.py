"""Result files: model and data hashes, the cache, atomic JSON writes.

A benchmark result is one JSON document:

    {"format": "tinylm-eval-result", "harness_version", "benchmark", "benchmark_version",
     "status": "ok" | "timeout" | "crashed" | "error" | "skipped",
     "model": {"id", "sha256", "key", "family", "tokenizer", "context_len", "step"},
     "data_sha256", "settings" (the ones that change this benchmark's scores), "limit",
     "scores", "wall_seconds", "created", "cached"}

`model.sha256` is the sha256 of model.safetensors as the checkpoint's meta.json records it. For
an in-memory model it is the sha256 of the same bytes: the state dict serialised exactly as
`save_checkpoint` writes it, so a merge scored in memory and later saved keeps its hash.
`model.key` adds the tokenizer hash and the family/config (same weights under another tokenizer
are another model); it names the cache folder. A result's file name is a hash of everything
else that can change its scores: benchmark and harness versions, data sha256, settings, limit.
Only "ok" results are cached; a timeout or a crash is retried next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinylm.io import default_cache_dir as _cache_dir
from tinylm.io import sha256_file as _sha256_file
from tinylm.io import write_text_atomic

RESULT_FORMAT = "tinylm-eval-result"


def default_cache_dir() -> Path:
    return _cache_dir("eval")


# --------------------------------------------------------------------------- hashes

def sha256_file(path: Path) -> str:
    """sha256 of a data file, remembered for the process by (path, size, mtime)."""
    return _sha256_file(path, remember=True)


def data_sha256(paths: list[Path], root: Path) -> dict:
    """{"files": {relative path: sha256}, "combined": sha256 over those}"""
    per_file = {str(p.relative_to(root)) if p.is_relative_to(root) else str(p): sha256_file(p)
                for p in sorted(paths)}
    combined = hashlib.sha256(json.dumps(per_file, sort_keys=True).encode()).hexdigest()
    return {"combined": combined, "files": per_file}


def state_dict_sha256(state_dict: dict) -> str:
    """sha256 of the model.safetensors that `save_checkpoint` would write for this state."""
    from safetensors.torch import save

    from tinylm.train.checkpoint import FORMAT

    weights = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    return hashlib.sha256(save(weights, metadata={"format": FORMAT})).hexdigest()


@dataclass
class ModelInfo:
    """Who was scored: enough to tell two models apart and to find their cached results."""
    id: str
    sha256: str
    family: str
    config: dict
    tokenizer: dict
    context_len: int
    step: int | None = None
    params: int | None = None
    key: str = field(default="")

    def __post_init__(self):
        if not self.key:
            blob = json.dumps({"weights": self.sha256, "tokenizer": self.tokenizer.get("hash"),
                               "family": self.family, "config": self.config}, sort_keys=True,
                              default=str)
            self.key = hashlib.sha256(blob.encode()).hexdigest()

    def to_dict(self) -> dict:
        return asdict(self)


def checkpoint_info(path: Path) -> ModelInfo:
    """From meta.json, after the weights and tokenizer files are checked against the sha256 it
    records: the cache is keyed by that hash, so a file changed after scoring must be refused
    here, never served a stale score. No torch is needed."""
    from tinylm.errors import TinyLMError
    from tinylm.train.checkpoint import read_meta

    path = Path(path)
    meta = read_meta(path)
    for name in ("model.safetensors", "tokenizer.json"):
        file, expected = path / name, meta["files"].get(name)
        if not file.is_file() or expected is None:
            raise TinyLMError(f"{path}: checkpoint file {name} is missing")
        if _sha256_file(file) != expected:
            raise TinyLMError(f"{file}: sha256 mismatch: the file is corrupt or was changed "
                              f"after saving")
    config = full_config(meta["family"], meta["model_config"])
    return ModelInfo(id=str(path), sha256=meta["files"]["model.safetensors"],
                     family=meta["family"], config=config, tokenizer=meta.get("tokenizer", {}),
                     context_len=int(config.get("context_len", 0)), step=meta.get("step"))


def full_config(family: str, config: dict) -> dict:
    """The config with every default filled in, so a saved partial config and the in-memory
    model's dataclass describe (and hash as) the same model."""
    from dataclasses import asdict as dc_asdict

    from tinylm.config import from_dict
    from tinylm.models import families

    known = families()
    if family not in known:
        return dict(config)
    return dc_asdict(from_dict(known[family].config_class, dict(config)))


def model_info(model, tokenizer, model_id: str | None = None) -> ModelInfo:
    """For an in-memory model (a merge being scored before it is saved, a test model)."""
    from dataclasses import asdict as dc_asdict
    from dataclasses import is_dataclass

    config = model.config
    config_dict = dc_asdict(config) if is_dataclass(config) else dict(vars(config))
    sha = state_dict_sha256(model.state_dict())
    return ModelInfo(id=model_id or f"in-memory:{sha[:12]}", sha256=sha,
                     family=getattr(model, "family", type(model).__name__), config=config_dict,
                     tokenizer=tokenizer.describe(), context_len=int(config.context_len),
                     params=sum(p.numel() for p in model.parameters()))


# --------------------------------------------------------------------------- the cache

def cache_path(cache_dir: Path, model: ModelInfo, benchmark: str, identity: dict) -> Path:
    """identity: everything besides the model that changes the scores."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    name = f"{benchmark}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}.json"
    return Path(cache_dir) / model.key[:32] / name


def read_result(path: Path) -> dict | None:
    """A cached ok result, or None (missing, unreadable, or not ok)."""
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("status") != "ok":
        return None
    return result


def write_json(path: Path, data: dict) -> Path:
    """Temp file in the same folder, fsync, rename: readers see the old file or the new one."""
    return write_text(path, json.dumps(data, indent=1, default=str))


def write_text(path: Path, text: str) -> Path:
    """Atomic like `write_text_atomic`, but readable as a normally created file would be (the
    temp file starts as 0600)."""
    path = Path(path)
    write_text_atomic(path, text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
