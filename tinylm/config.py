"""Dataclass <-> JSON/TOML, argparse-from-dataclass, and preset lookup.

Configs are plain dataclasses. They are saved as JSON beside the weights, loaded back with
unknown keys refused (a typo in a config file must not be silently ignored), and every field
can be set from the command line through flags generated from the dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import typing
from pathlib import Path

from tinylm.errors import TinyLMError


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass `cls` from `data`, refusing unknown keys with a clear message."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise TinyLMError(f"{where}: unknown setting(s) {unknown}; valid: {sorted(names)}")
    try:
        return cls(**data)
    except (TypeError, ValueError) as err:
        raise TinyLMError(f"{where}: {err}") from None


def read_config_file(path: str | Path) -> dict:
    """Read a .json or .toml file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise TinyLMError(f"config file not found: {path}")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text(encoding="utf-8"))
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise TinyLMError(f"cannot parse config file {path}: {err}") from None


# --------------------------------------------------------------------------- presets

def preset_names() -> list[str]:
    """Every family's presets (each family module holds its own `PRESETS`)."""
    from tinylm.models import presets

    return sorted(presets())


def load_preset(name: str) -> dict:
    """A preset as a plain dict: {"family", "description", "model", "tokenizer", "train"}."""
    from tinylm.models import presets

    found = presets()
    if name not in found:
        raise TinyLMError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(found))}")
    family, preset = found[name]
    return {"family": family.name, "description": preset.description,
            "model": dict(preset.model), "tokenizer": dict(preset.tokenizer),
            "train": dict(preset.train)}


# --------------------------------------------------------------------------- argparse

def _base_type(annotation):
    """Map a dataclass field annotation (possibly a string) to a callable for argparse."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(
            annotation.split("|")[0].strip(), str)
    origin = typing.get_origin(annotation)
    if origin is not None:  # Optional[X] / X | None
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if args else str
    return annotation


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, skip: set[str] = frozenset()):
    """Add one `--field-name` flag per dataclass field; defaults stay None (= not given)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        kind = _base_type(hints.get(field.name, field.type))
        flag = "--" + field.name.replace("_", "-")
        doc = (field.metadata or {}).get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else None
        group.add_argument(flag, dest=field.name, default=None,
                           type=parse_bool if kind is bool else kind,
                           help=f"{doc} (default: {default})".strip())


def given_flags(args: argparse.Namespace, cls) -> dict:
    """The dataclass fields the user actually set on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}
