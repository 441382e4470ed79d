"""`tinylm info`: exact parameter count by part and size on disk, for a preset or checkpoint."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save

from tinylm.errors import TinyLMError


def _model_for(target: str):
    from tinylm.config import load_preset, preset_names
    from tinylm.models import build_model, get_family

    if Path(target).is_dir():
        from tinylm.train.checkpoint import load_checkpoint, read_meta

        meta = read_meta(target)
        if not get_family(meta["family"]).language_model:  # shapes only; no tokenizer to load
            return (build_model(meta["family"], meta["model_config"]),
                    f"checkpoint {target} (step {meta.get('step', 0)})", None)

        ckpt = load_checkpoint(target)
        return ckpt.build_model(), f"checkpoint {target} (step {ckpt.step})", ckpt.tokenizer.kind
    if target not in preset_names():
        raise TinyLMError(f"{target!r} is neither a checkpoint folder nor a preset; presets: "
                          f"{', '.join(preset_names())}")
    preset = load_preset(target)
    if not get_family(preset["family"]).language_model:  # no tokenizer, no vocabulary
        return (build_model(preset["family"], preset["model"]),
                f"preset {target}: {preset.get('description', '')}", None)
    tok = preset.get("tokenizer", {"kind": "bytes"})
    vocab = 257 if tok["kind"] == "bytes" else tok["vocab_size"]
    model = build_model(preset["family"], {**preset["model"], "vocab_size": vocab})
    return model, f"preset {target}: {preset.get('description', '')}", tok["kind"]


def describe(target: str) -> str:
    model, title, tok_kind = _model_for(target)
    from tinylm.models import get_family

    record = get_family(model.family)
    parts = record.breakdown(model)
    total = sum(parts.values())
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    fp32_bytes = len(save(state))
    bf16_bytes = len(save({k: v.bfloat16() for k, v in state.items()}))
    head = (f"family {model.family}, tokenizer {tok_kind}, vocab {model.config.vocab_size}"
            if record.language_model else f"family {model.family} (not a language model)")
    lines = [title, head, *(record.describe_extra(model.config) if record.describe_extra else []),
             *(record.describe_model(model) if record.describe_model else []),
             "", f"{'part':44s} {'params':>12s} {'share':>7s}"]
    for name, count in parts.items():
        lines.append(f"{name:44s} {count:12,d} {100 * count / total:6.2f}%")
    by_group: dict[str, int] = {}
    for name, p in model.named_parameters():
        by_group[record.group_of(name)] = by_group.get(record.group_of(name), 0) + p.numel()
    lines += [f"{'total':44s} {total:12,d}", "", "by merge group (tinylm merge --t-group):"]
    lines += [f"  {group:42s} {by_group[group]:12,d}" for group in record.groups
              if group in by_group]
    lines += ["",
              f"size on disk (safetensors): {fp32_bytes:,} bytes fp32, {bf16_bytes:,} bytes bf16"]
    return "\n".join(lines)
