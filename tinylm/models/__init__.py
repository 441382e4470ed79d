"""Model families by name: the registry of family records (`tinylm.models.family.Family`).

Built-in families are the modules in BUILTIN_FAMILIES, each ending with `FAMILY = Family(...)`.
Others join in one of three ways, all read the first time a family is looked up:
- `register(record)` in the running process;
- an installed package's entry point in the group `tinylm.families` (a module that defines
  FAMILY, or a Family object);
- the environment variable TINYLM_PLUGINS: module names or paths to .py files, separated by
  os.pathsep. The variable is inherited by child processes (evaluation and tournament workers),
  so a family defined in a script or a test file works across the whole pipeline. Only what
  the user names there is imported: a checkpoint's meta.json names a family, never a module.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.models.family import Family, Preset

BUILTIN_FAMILIES = ("tinylm.models.llama", "tinylm.models.looped", "tinylm.models.bitnet",
                    "tinylm.models.qkvae")
BUILTIN_FAMILIES += ("tinylm.models.blt",)  # Byte Latent Transformer (issue 11)
PLUGINS_ENV = "TINYLM_PLUGINS"

_FAMILIES: dict[str, Family] = {}
_loaded = False


def register(record: Family) -> Family:
    """Add a family record (a second record under the same name replaces the first)."""
    if not isinstance(record, Family):
        raise TypeError(f"register() takes a Family record, got {type(record).__name__}")
    _FAMILIES[record.name] = record
    return record


def _record_of(module, where: str) -> Family:
    record = getattr(module, "FAMILY", None)
    if not isinstance(record, Family):
        raise TinyLMError(f"{where}: defines no FAMILY = Family(...) record")
    return record


def _import_plugin(entry: str):
    """A plugin named by module name, or by the path of a .py file."""
    if entry.endswith(".py") or os.sep in entry:
        path = Path(entry).resolve()
        if not path.is_file():
            raise TinyLMError(f"{PLUGINS_ENV}: no such file {path}")
        name = f"tinylm_plugin_{path.stem}_{abs(hash(str(path)))}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while classes are built
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(entry)
    except ImportError as err:
        raise TinyLMError(f"{PLUGINS_ENV}: cannot import {entry!r} ({err})") from None


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_FAMILIES:
        _FAMILIES.setdefault(*_named(_record_of(importlib.import_module(module), module)))
    from importlib.metadata import entry_points

    for point in entry_points(group="tinylm.families"):
        value = point.load()
        register(value if isinstance(value, Family) else _record_of(value, point.name))
    for entry in filter(None, os.environ.get(PLUGINS_ENV, "").split(os.pathsep)):
        register(_record_of(_import_plugin(entry), entry))


def _named(record: Family) -> tuple[str, Family]:
    return record.name, record


def families() -> dict[str, Family]:
    """Every known family record, by name."""
    _load_all()
    return dict(_FAMILIES)


def get_family(name: str) -> Family:
    known = families()
    if name not in known:
        raise TinyLMError(f"unknown model family {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def family_of_config(config) -> Family:
    """The record whose config class `config` is an instance of."""
    for record in families().values():
        if type(config) is record.config_class:
            return record
    raise TinyLMError(f"no model family has the config class {type(config).__name__}")


def reference_family() -> Family:
    """The family whose tensor layout tensor-level tools assume when given no family: llama,
    whose `layers.{i}` names mirror the Hugging Face layout mergekit merges."""
    return get_family("llama")


def build_model(family: str, config_dict: dict):
    """Instantiate a model from its family name and a plain config dict."""
    return get_family(family).build(config_dict)


# --------------------------------------------------------------------------- presets

def presets() -> dict[str, tuple[Family, Preset]]:
    """Every preset of every family: name -> (family, preset). Names are unique."""
    found: dict[str, tuple[Family, Preset]] = {}
    for record in families().values():
        for name, preset in record.presets.items():
            if name in found:
                raise TinyLMError(f"preset {name!r} is defined by both {found[name][0].name} "
                                  f"and {record.name}")
            found[name] = (record, preset)
    return found
