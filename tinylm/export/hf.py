"""Hugging Face folders: `tinylm export hf` (checkpoint -> a folder transformers loads offline),
`tinylm import hf` (a local Llama folder -> a tinylm checkpoint) and the hub upload.

The weight mapping is the family's: `Family.hf` (an `HFAdapter`, for llama in
`tinylm/models/llama_hf.py`); this module only reads and writes folders. The exported folder:

    config.json  generation_config.json  model.safetensors     (the model, float32)
    tokenizer.json  tokenizer_config.json  special_tokens_map.json   (export/hf_tokenizer.py)
    README.md    the model card, with the YAML front matter the hub reads

It is written as a hidden temporary sibling and renamed into place, so a reader never sees
half of one; an existing folder is replaced only when it holds nothing but these files and its
README.md is one of ours. Weights are read and written as safetensors only: a folder that holds
only pickles (`pytorch_model.bin`) is refused, never unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from tinylm.errors import TinyLMError
from tinylm.export.hf_tokenizer import tinylm_tokenizer, tokenizer_files
from tinylm.io import (
    check_output,
    is_checkpoint_folder,
    is_run_folder,
    owns_file,
    remove_path,
    temp_prefix,
    write_error,
)

HF_FILES = ("config.json", "generation_config.json", "model.safetensors", "README.md",
            "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
CHECK_TOLERANCE = 1e-5  # max |logit difference| the export's self-check accepts


def adapter_of(family: str):
    """The family's HFAdapter, or one line saying why the family has none."""
    from tinylm.models import get_family

    adapter = get_family(family).hf
    if adapter is None:
        raise TinyLMError(f"the {family} family has no Hugging Face mapping (its record sets "
                          f"no `hf` adapter)")
    if adapter.refusal:
        raise TinyLMError(f"a {family} model cannot be exported to Hugging Face: "
                          f"{adapter.refusal}")
    return adapter


# --------------------------------------------------------------------------- export

def check_hf_output(out: Path, inputs=(), force: bool = False) -> Path:
    """Refuse an output folder that must not be replaced (see the module docstring)."""
    out = Path(out)
    if not out.is_dir():  # absent, or a file (replaced only if ours or forced)
        return check_output(out, "file", inputs=inputs, force=force)
    if is_run_folder(out) or is_checkpoint_folder(out):
        raise TinyLMError(f"{out} is a tinylm run or checkpoint folder; choose another output")
    for source in inputs:
        a, b = out.resolve(), Path(source).resolve()
        if a == b or a.is_relative_to(b) or b.is_relative_to(a):
            raise TinyLMError(f"output {out} is (or holds, or lies inside) the input {source}; "
                              f"choose another output")
    names = {p.name for p in out.iterdir()}
    foreign = sorted(names - set(HF_FILES))
    ours = "README.md" in names and owns_file(out / "README.md")
    if foreign or (names and not ours):
        shown = ", ".join(foreign[:3]) or "files without a tinylm model card"
        raise TinyLMError(f"{out} holds files tinylm did not write ({shown}); it is never "
                          f"replaced (choose another output)")
    return out


def export_hf(checkpoint: str | Path, out: str | Path, check: bool = True) -> dict:
    """Write the Hugging Face folder of a checkpoint; returns what was done (for the CLI)."""
    from safetensors.torch import save_file

    from tinylm.models import get_family
    from tinylm.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    family = ckpt.meta["family"]
    adapter = adapter_of(family)
    config = get_family(family).config_from(ckpt.meta["model_config"])
    hf_config, tensors = adapter.to_hf(ckpt.model_state, config)
    eos = ckpt.tokenizer.eos_id
    hf_config["eos_token_id"] = eos
    texts = {**tokenizer_files(ckpt.tokenizer, config.context_len),
             "config.json": json.dumps(hf_config, indent=2),
             "generation_config.json": json.dumps(
                 {"eos_token_id": eos, "pad_token_id": eos, "bos_token_id": None,
                  "do_sample": False, "max_length": config.context_len}, indent=2),
             "README.md": model_card(ckpt.meta, hf_config,
                                     sum(t.numel() for t in ckpt.model_state.values()),
                                     _eval_summary(ckpt.path))}

    def write(folder: Path) -> None:
        save_file({k: v.float().contiguous() for k, v in tensors.items()},
                  str(folder / "model.safetensors"), metadata={"format": "pt"})
        for name, text in texts.items():
            (folder / name).write_text(text, encoding="utf-8")

    out = _write_folder(Path(out), write)
    diff = check_against_transformers(out, ckpt) if check else None
    return {"out": out, "family": family, "tensors": len(tensors), "max_abs_diff": diff}


def _write_folder(out: Path, write) -> Path:
    """Build the folder as a temporary sibling, then swap it into place in one rename."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=temp_prefix(out), suffix=".tmp"))
    except OSError as err:
        raise write_error(out, err, "nothing was written") from None
    try:
        write(tmp)
        for entry in tmp.iterdir():
            with open(entry, "rb") as f:
                os.fsync(f.fileno())
        if out.exists() or out.is_symlink():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            remove_path(old)
        else:
            os.replace(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(out, err, f"{out} is unchanged") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_against_transformers(folder: Path, ckpt) -> float | None:
    """Load the folder with transformers and compare its logits with tinylm's on a probe;
    None when transformers is not installed (the check is skipped, not failed)."""
    try:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging
    except ImportError:
        return None
    hf_logging.disable_progress_bar()  # its "Loading weights" bar is noise on our stderr
    model = ckpt.build_model()
    peer = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    length = min(32, model.config.context_len)
    probe = torch.randint(0, model.config.vocab_size, (1, length),
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((model(probe) - peer(input_ids=probe).logits).abs().max())
    if diff > CHECK_TOLERANCE:
        raise TinyLMError(f"{folder}: transformers' logits differ from tinylm's by {diff:.2e} "
                          f"(> {CHECK_TOLERANCE}); the export is wrong, do not ship it")
    return diff


# --------------------------------------------------------------------------- model card

def model_card(meta: dict, hf_config: dict, n_params: int, scores: dict | None = None) -> str:
    """README.md: YAML front matter for the hub, then what the checkpoint's meta.json says."""
    rows = [("family (tinylm)", meta["family"]), ("preset", meta.get("preset")),
            ("parameters", f"{n_params:,}"),
            ("shape", (f"dim {hf_config['hidden_size']}, {hf_config['num_hidden_layers']} "
                       f"layers, {hf_config['num_attention_heads']} heads "
                       f"({hf_config['num_key_value_heads']} KV), SwiGLU "
                       f"{hf_config['intermediate_size']}, context "
                       f"{hf_config['max_position_embeddings']}")),
            ("tokenizer", _tokenizer_line(meta.get("tokenizer") or {})),
            ("training data", meta.get("data")), ("steps", meta.get("step")),
            ("tokens seen", _number(meta.get("tokens_seen")))]
    rows += [(name.replace("_", " "), _number(value))
             for name, value in (meta.get("metrics") or {}).items()]
    rows += [(f"eval: {name}", _number(value)) for name, value in (scores or {}).items()]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows if value not in (None, ""))
    tags = ["tinylm", hf_config["model_type"], "text-generation"]
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags:", *[f"- {tag}" for tag in tags], "---"]
    return "\n".join(front) + f"""

# {meta.get("preset") or meta["family"]} (exported by tinylm)

A {hf_config["architectures"][0]} exported by `tinylm export hf` from a tinylm
{meta["family"]} checkpoint; transformers computes the same logits as tinylm (to 1e-5).

| | |
|---|---|
{table}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("PATH")
model = AutoModelForCausalLM.from_pretrained("PATH")
ids = tokenizer("Once upon a time", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=50, do_sample=False)[0]))
```
"""


def _tokenizer_line(tok: dict) -> str:
    return f"{tok.get('kind')}, vocab {tok.get('vocab_size')}, EOS id {tok.get('eos_id')}" \
        if tok else ""


def _number(value):
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value


def _eval_summary(checkpoint: Path) -> dict:
    """Numeric scores of eval.json's summary, when `tinylm eval` left one in the checkpoint
    (a damaged eval.json only leaves the scores out of the card)."""
    try:
        summary = json.loads((checkpoint / "eval.json").read_text(encoding="utf-8"))["summary"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(summary, dict):
        return {}
    return {k: v for k, v in summary.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


# --------------------------------------------------------------------------- hub

def push_to_hub(folder: Path, repo: str, dry_run: bool) -> list[str]:
    """Upload the folder to the hub repo (created if missing); with dry_run, only the lines
    saying what would be uploaded. Needs network and a token (`huggingface-cli login`)."""
    lines = [(f"{'would upload' if dry_run else 'uploading'} {folder} to "
              f"https://huggingface.co/{repo}:")]
    lines += [f"  {p.name} ({p.stat().st_size:,} bytes)" for p in sorted(folder.iterdir())]
    if dry_run:
        return lines
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise TinyLMError("--push-to-hub needs huggingface_hub (pip install huggingface_hub)") \
            from None
    api = HfApi()
    try:
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo,
                          commit_message="Upload from tinylm export hf")
    except Exception as err:  # noqa: BLE001 -- network, auth, bad repo id: the hub's own types
        raise TinyLMError(f"upload to {repo} failed: {str(err).splitlines()[0][:200]}") from None
    return lines


# --------------------------------------------------------------------------- import

def read_hf_folder(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json and the safetensors weights of a local Hugging Face model folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not folder.is_dir():
        raise TinyLMError(f"not a folder: {folder} (give a local Hugging Face model folder)")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise TinyLMError(f"{folder}: no config.json; not a Hugging Face model folder")
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise TinyLMError(f"{config_path}: not valid JSON ({err})") from None
    if not isinstance(hf_config, dict):
        raise TinyLMError(f"{config_path}: not a JSON object")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for pattern in PICKLES for p in folder.glob(pattern))
        if pickles:
            raise TinyLMError(f"{folder}: weights only as pickles ({', '.join(pickles[:2])}); "
                              f"tinylm never unpickles: convert them to safetensors first")
        raise TinyLMError(f"{folder}: no .safetensors weights")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors.update(load_file(str(file)))
        except (SafetensorError, OSError, ValueError) as err:
            raise TinyLMError(f"{file}: unreadable safetensors file ({err})") from None
    return hf_config, tensors


def _eos_token(folder: Path) -> str | None:
    path = folder / "tokenizer_config.json"
    try:
        eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token")
    except (OSError, ValueError, AttributeError):
        return None
    return eos.get("content") if isinstance(eos, dict) else eos


def import_hf(folder: str | Path, out: str | Path) -> dict:
    """A tinylm checkpoint from a local Hugging Face folder; returns what was done."""
    from tinylm.models import families
    from tinylm.train.checkpoint import load_checkpoint, save_checkpoint

    folder = Path(folder)
    hf_config, tensors = read_hf_folder(folder)
    arch = hf_config.get("architectures") or []
    records = [r for r in families().values() if r.hf is not None and r.hf.from_hf is not None]
    record = next((r for r in records if r.hf.architecture in arch), None)
    if record is None:
        known = sorted({r.hf.architecture for r in records})
        raise TinyLMError(f"{folder}: architecture {arch or '?'} has no tinylm family; known: "
                          f"{', '.join(known)}")
    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise TinyLMError(f"{folder}: no tokenizer.json (a tinylm checkpoint needs its "
                          f"tokenizer)")
    tokenizer = tinylm_tokenizer(tok_path.read_text(encoding="utf-8"), _eos_token(folder),
                                 str(tok_path))
    config, state = record.hf.from_hf(hf_config, tensors)
    if tokenizer.vocab_size != config.vocab_size:
        raise TinyLMError(f"{folder}: the tokenizer has {tokenizer.vocab_size} ids but the model "
                          f"{config.vocab_size}; tinylm needs them equal")
    save_checkpoint(out, family=record.name, model_config=asdict(config), model_state=state,
                    tokenizer=tokenizer,
                    extra_meta={"step": None, "imported_from": str(folder.resolve()),
                                "hf_architecture": arch[0]})
    load_checkpoint(out).build_model()  # refuses at once what tinylm could not load
    return {"out": Path(out), "family": record.name, "tokenizer": tokenizer.kind,
            "parameters": sum(t.numel() for t in state.values())}
