"""Model families by name. A family is (config dataclass, module class); nothing else
branches on family names."""

from __future__ import annotations

from tinylm.errors import TinyLMError
from tinylm.models.llama import Llama, LlamaConfig
from tinylm.models.looped import Looped, LoopedConfig

MODELS: dict[str, tuple[type, type]] = {
    "llama": (LlamaConfig, Llama),
    "looped": (LoopedConfig, Looped),
}


def get_family(name: str) -> tuple[type, type]:
    if name not in MODELS:
        raise TinyLMError(f"unknown model family {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(family: str, config_dict: dict):
    """Instantiate a model from its family name and a plain config dict."""
    from tinylm.config import from_dict

    config_cls, model_cls = get_family(family)
    return model_cls(from_dict(config_cls, dict(config_dict), where=f"{family} model config"))
