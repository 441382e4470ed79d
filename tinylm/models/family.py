"""What tinylm knows about a model family: the model interface and the family record.

A family is one module under `tinylm/models/` (or any importable module, for plugins) that
defines a config dataclass and a model class, and ends with

    FAMILY = Family(name=..., config_class=..., model_class=..., presets=PRESETS, ...)

Everything the rest of tinylm asks about a model (merge, alignment, export, the optimizer's
weight-decay groups, `tinylm info`, evaluation) it asks this record; no code outside
`tinylm/models/` branches on a family name, a parameter-name pattern or `hasattr(config, ...)`.
The registry that finds records lives in `tinylm/models/__init__.py`.

Adding a family: write the module (config dataclass with `vocab_size` and `context_len`, a model
meeting `LanguageModel` below), give it its record, and list the module in
`tinylm.models.BUILTIN_FAMILIES` (or, outside tinylm, register it: `tinylm.models.register`,
the `tinylm.families` entry-point group, or the `TINYLM_PLUGINS` environment variable).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# A tensor's place in the depth of the network, for depth-gradient merges (mergekit's
# `gradient`): None = outside the stack of blocks (embeddings, final norm; a gradient's first
# value applies, as mergekit reads such tensors at position 0); a float in [0, 1] = the
# tensor's relative depth; a tuple of floats = one depth per row along dim 0 (tensors that
# stack per-loop pieces, such as per-loop LoRA adapters or loop embeddings).
Depth = float | tuple[float, ...] | None


@runtime_checkable
class LanguageModel(Protocol):
    """The interface every tinylm language model meets (an `nn.Module`).

    Required:
    - `family: str`, the name of its record;
    - `config`: a dataclass instance with at least `vocab_size` and `context_len`, saved as JSON
      beside the weights and rebuilt with `config_class(**json)`;
    - `forward(idx, cache=None, pos=0) -> logits`: idx (B, T) token ids at positions
      [pos, pos + T) -> logits (B, T, vocab_size); with a cache, keys and values of those
      positions are written into it, so generation can feed one token at a time;
    - `new_cache(batch, max_len=None, device=None, dtype=None)`: an empty cache for `forward`.

    Optional (callers check with getattr):
    - `fast_decoder() -> object | None`: an object whose `step(ids (B,), cache, pos) -> logits
      (B, vocab)` equals `forward(ids[:, None], cache, pos)[:, -1]`, for faster decoding;
    - `parameter_breakdown() -> dict[str, int]`: parameters per part, for `tinylm info`
      (default: one line per tensor).
    """

    family: str
    config: Any

    def forward(self, idx, cache=None, pos: int = 0): ...

    def new_cache(self, batch: int, max_len: int | None = None, device=None, dtype=None): ...


@dataclass(frozen=True)
class Preset:
    """A named starting point: the model shape, the tokenizer and training settings.

    `model` holds config fields (vocab_size comes from the tokenizer); `train` holds
    TrainConfig fields that override its defaults.
    """

    description: str
    model: Mapping[str, Any]
    tokenizer: Mapping[str, Any] = field(default_factory=lambda: {"kind": "bytes"})
    train: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlignSpec:
    """What permutation alignment (Git Re-Basin weight matching, `merge/align.py`) needs: the
    state-dict prefixes of the blocks to align, each a llama-style block (`attn.wqkv`,
    `attn.wo`, `mlp.w13`, `mlp.w2`) of this attention and MLP shape."""

    blocks: tuple[str, ...]
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_hidden: int

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class ExportSpec:
    """What the single-file export needs: the modules whose `# %% export` regions, in this
    order, define the model (torch and the standard library only, no tinylm imports inside a
    region), and the names of the model and config classes there."""

    sources: tuple[str, ...]
    model: str
    config: str
    notes: str = ""  # a paragraph for the exported file's docstring


@dataclass(frozen=True)
class CEngineSpec:
    """What the C engine export (`tinylm export c`, tinylm/export/c_engine.py) needs of one
    model: the engine's settings, the block applications of one token's pass, and the
    tensors in the engine's order. The exporter checks every shape against the settings.

    - settings: the header fields c_engine.FIELDS names (vocab, dim, heads, ..., eps);
    - applications: per block application, in order, (stored block index, loop index or -1):
      a loop index adds that loop's embedding before the block and, on the LoRA block, uses
      that loop's adapters;
    - tensors: (name, value) in the order c_engine.expected_layout lists them; a value is a
      float tensor, or (trits, row_scale) for a ternary matrix.
    """

    settings: Mapping[str, int | float]
    applications: tuple[tuple[int, int], ...]
    tensors: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class HFAdapter:
    """How a family maps to a Hugging Face `transformers` architecture, in the spirit of
    torchtitan's per-family state_dict_adapter: `tinylm export hf`, `tinylm import hf` and
    `tinylm export gguf` ask this, never a family name.

    - `to_hf(state, config) -> (hf_config, tensors)`: the config.json dict (with
      `architectures` and `model_type`) and the tensors under transformers' names; raises
      `TinyLMError` (one line) for a config of the family that has no exact equivalent;
    - `from_hf(hf_config, tensors) -> (config, state)`: the reverse, for `import hf`; None if
      this family cannot be imported;
    - `refusal`: when set, the family has no exact Hugging Face equivalent at all and this line
      says why (to_hf and from_hf are then None);
    - `architecture`: the transformers class `import hf` recognises in a config.json's
      `architectures` to pick this family.
    """

    architecture: str = ""
    to_hf: Callable[[Mapping[str, Any], Any], tuple[dict, dict]] | None = None
    from_hf: Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[Any, dict]] | None = None
    refusal: str = ""


def _default_breakdown(model) -> dict[str, int]:
    return {name: p.numel() for name, p in model.named_parameters()}


@dataclass(frozen=True)
class Family:
    """The record of one model family; see the module docstring.

    Functions that need the model's shape take its config; names are state-dict names.
    """

    name: str
    config_class: type
    model_class: type
    presets: Mapping[str, Preset] = field(default_factory=dict)
    groups: tuple[str, ...] = ("embeddings", "norms", "attention", "mlp", "other")
    """The parameter groups `group_of` returns: per-group t in merges, rows of `tinylm info`."""
    group_of: Callable[[str], str] = lambda name: "other"
    """Parameter group of a tensor name."""
    depth_of: Callable[[Sequence[str], Any], dict[str, Depth]] = lambda names, config: {}
    """Depth of every tensor (see `Depth`), given all names and the config (None: infer what
    can be inferred from the names). Names left out are outside the stack."""
    fused_splits: Callable[[Any], Callable[[str], Sequence[int] | None]] | None = None
    """config -> split_of(name): row sizes of a fused tensor's parts (q|k|v, gate|up), merged
    each with its own angle as mergekit sees them; None where a tensor is not fused."""
    align: Callable[[Any], AlignSpec] | None = None
    """config -> AlignSpec, or None if this family cannot be permutation-aligned."""
    no_weight_decay: Callable[[str, Any], bool] = lambda name, param: param.ndim < 2
    """Whether the optimizer exempts a parameter (name, tensor) from weight decay."""
    export: ExportSpec | None = None
    """The single-file export's needs, or None if the family cannot be exported that way."""
    language_model: bool = True
    """False for families that are not next-token models (image models such as qkvae):
    `tinylm train`, `eval` and `generate` refuse them with one line, and their presets are
    built without a vocabulary. Their checkpoints hold no tokenizer."""
    merge_notes: Callable[[Mapping, Mapping, Mapping, Any], dict] | None = None
    """(state_a, state_b, merged, config) -> a small JSON-able dict on what a merge did that
    the tensors alone do not say (bitnet: the share of ternary values that flipped); `tinylm
    merge` and the tournament's merges print it and store it in the merge's meta.json. None:
    nothing to add."""
    describe_extra: Callable[[Any], list[str]] | None = None
    """config -> extra lines for `tinylm info` (an image model's code grid), or None."""
    c_export: Callable[[Any], CEngineSpec] | None = None
    """model -> CEngineSpec: the model in the C engine's layout (`tinylm export c`); it raises
    ValueError for a setting the engine lacks. None: the family has no C export."""
    hf: HFAdapter | None = None
    """The Hugging Face mapping (`export hf`, `import hf`, `export gguf`), or None: those
    commands refuse the family with one line."""
    frozen_prefixes: tuple[str, ...] = ()
    """State-dict prefixes of tensors that are not trained and must be identical in every
    model of a lineage (BLT: its frozen entropy patcher, `patcher.`): a merge refuses two
    parents that differ there, with one line, and copies them unchanged when equal."""
    prepare_training: Callable[..., None] | None = None
    """(model, train_tokens, train_config, seq_len, log) -> None: a first stage run once when
    a fresh run starts, before the optimizer is built (BLT: train or load, then freeze, its
    patcher and fit theta). What it makes must live in the model's state dict, which is how
    a resumed run gets it back (it is not run again on resume). None: no first stage."""
    checkpoint_meta: Callable[[Any], dict] | None = None
    """model -> a small JSON-able dict stored in every training checkpoint's meta.json (BLT:
    its patcher's content hash, theta and patch statistics). None: nothing to add."""
    describe_model: Callable[[Any], list[str]] | None = None
    """model -> extra lines for `tinylm info`, read from the weights (BLT: the patcher's hash
    and patch statistics), or None."""

    def build(self, config_dict: Mapping[str, Any], where: str | None = None):
        """The model for a plain config dict, unknown keys refused with one line."""
        from tinylm.config import from_dict

        config = from_dict(self.config_class, dict(config_dict),
                           where=where or f"{self.name} model config")
        return self.model_class(config)

    def config_from(self, config_dict: Mapping[str, Any]):
        from tinylm.config import from_dict

        return from_dict(self.config_class, dict(config_dict), where=f"{self.name} model config")

    def breakdown(self, model) -> dict[str, int]:
        method = getattr(model, "parameter_breakdown", None)
        return method() if callable(method) else _default_breakdown(model)
