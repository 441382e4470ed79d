"""`tinylm info`: exact parameter count by part and size on disk, for a preset or checkpoint."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save

from tinylm.errors import TinyLMError


def _model_for(target: str):
    from tinylm.config import load_preset, preset_names
    from tinylm.models import build_model

    if Path(target).is_dir():
        from tinylm.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(target)
        return ckpt.build_model(), f"checkpoint {target} (step {ckpt.step})", ckpt.tokenizer.kind
    if target not in preset_names():
        raise TinyLMError(f"{target!r} is neither a checkpoint folder nor a preset; presets: "
                          f"{', '.join(preset_names())}")
    preset = load_preset(target)
    tok = preset.get("tokenizer", {"kind": "bytes"})
    vocab = 257 if tok["kind"] == "bytes" else tok["vocab_size"]
    model = build_model(preset["family"], {**preset["model"], "vocab_size": vocab})
    return model, f"preset {target}: {preset.get('description', '')}", tok["kind"]


def describe(target: str) -> str:
    model, title, tok_kind = _model_for(target)
    parts = model.parameter_breakdown()
    total = sum(parts.values())
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    fp32_bytes = len(save(state))
    bf16_bytes = len(save({k: v.bfloat16() for k, v in state.items()}))
    lines = [title, f"family {model.family}, tokenizer {tok_kind}, vocab {model.config.vocab_size}",
             "", f"{'part':44s} {'params':>12s} {'share':>7s}"]
    for name, count in parts.items():
        lines.append(f"{name:44s} {count:12,d} {100 * count / total:6.2f}%")
    lines += [f"{'total':44s} {total:12,d}", "",
              f"size on disk (safetensors): {fp32_bytes:,} bytes fp32, {bf16_bytes:,} bytes bf16"]
    return "\n".join(lines)
