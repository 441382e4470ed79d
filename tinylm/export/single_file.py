"""Single-file inference export: one Python file with the model, its weights, its tokenizer and
the sampler, that needs nothing but torch and writes the same text as `tinylm generate`.

Blink-1's card ships its model this way: an `infer.py` that "is the whole model" ("no install
beyond torch, no private repo"), used as `python infer.py --prompt "the " -n 120` or as
`from infer import load_model, generate`. `export_single_file` writes such a file for a tinylm
checkpoint. Its layout, top to bottom:

    docstring (what it is, how to run it), imports (torch and the standard library)
    MODEL_CONFIG, WEIGHTS_SHA256, ...           the checkpoint's settings
    the family's model                          the `# %% export` regions of its modules
    the tokenizer                               standalone/tok_<kind>.py
    sampler and decode loop                     regions of infer/sampling.py, infer/generate.py
    loader, generation, command line            standalone/runtime.py
    TOKENIZER = {...}, WEIGHTS = \"\"\"...\"\"\"        data: tokenizer tables, base64 safetensors
    if __name__ == "__main__": ...

The model is not a copy: the family record's `export` names the modules (`tinylm/models/*.py`)
whose regions between `# %% export` and `# %% end export` are pasted in, so the exported model
*is* tinylm's model code, and so are the sampler and the decode loop (one decode loop serves
`tinylm generate`, evaluation and this file). A region may not import anything: the header
imports torch and the standard library, and the regions define the rest, in order. Each
tokenizer kind brings a pure-Python encoder (`TOKENIZER_SOURCES`): those replace the Rust and
C++ tokenizer libraries, which is the point of a torch-only file. The weights
are the checkpoint's `model.safetensors`, byte for byte: base64 in the file by default, or
beside it (`weights="beside"`: `infer.safetensors` next to `infer.py`, checked by sha256 when
loaded). A Blink-shaped model (1,086 parameters) makes a 38 KB file, nearly all of it code; a
10.7M-parameter one a 58 MB file, which costs about 0.8 s more to start than the same script
with its weights beside it; use `beside` from there on.

The tokenizers are rewritten on the standard library: bytes (trivial), byte-level BPE (GPT-2
pre-tokenization and ranked merges, as `tokenizers` does them) and SentencePiece unigram
(Viterbi with SentencePiece's float32 scoring); the tests compare them with `tokenizers` and
`sentencepiece` on TinyStories, WikiText-2 and FineWeb-Edu text.

Same text, not just similar: the model, sampler and loop are tinylm's own code, and the export
checks itself before returning (it loads the written file
and compares, with tinylm, its tokenizer's ids on a sample text, its logits over a full context
through the KV cache, bit for bit, and a short sampled continuation). Exactness holds on the same torch version and device; another
torch version may round differently and drift after some tokens.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.util
import json
import pprint
import struct
import sys
import textwrap
import uuid
from pathlib import Path

from tinylm.errors import TinyLMError

PARTS = Path(__file__).with_name("standalone")
MARKER = "# %% export"
END_MARKER = "# %% end export"
HEADER_IMPORTS = """\
from __future__ import annotations

import argparse
import base64
import codecs
import contextlib
import hashlib
import itertools
import json
import math
import os
import struct
import sys
import unicodedata
import warnings
from dataclasses import dataclass, field
from functools import partial

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")  # torch runs without it
import torch
import torch.nn.functional as F
from torch import nn


class TinyLMError(ValueError):
    \"\"\"What tinylm raises for bad settings; a ValueError here.\"\"\"
"""

# The engine's regions, after the model's: sampling settings, the sampler, the decode loop.
ENGINE_SOURCES = ("tinylm.infer.settings", "tinylm.infer.sampling", "tinylm.infer.generate")
# Tokenizer kind -> the part that defines its Tokenizer.
TOKENIZER_SOURCES: dict[str, str] = {
    "bytes": "tok_bytes.py",
    "bpe": "tok_bpe.py",
    "unigram": "tok_unigram.py",
}
CHECK_TEXT = ("Once upon a time, Tom's dog didn't say \"hi\"!  It's 3.14 or 42... ok?\n\n"
              "  Café naïve — 東京 😀 1+2=3 'quoted' don't you'll we've I'm she'd\t\tend ")
WEIGHTS_LINE = 100  # base64 characters per line of the embedded weights


# --------------------------------------------------------------------------- parts

def part_source(name: str) -> str:
    """The exported body of a standalone part: everything after its `# %% export` line."""
    text = (PARTS / name).read_text(encoding="utf-8")
    _, found, body = text.partition(MARKER + "\n")
    if not found:
        raise RuntimeError(f"standalone part {name} has no {MARKER!r} line")
    return body.strip("\n") + "\n"


def region_source(module_name: str) -> str:
    """The `# %% export` ... `# %% end export` regions of a module (a region without an end
    runs to the end of the file), joined. A region may not import: it must run on the header's
    imports and the regions before it."""
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    text = Path(module.__file__).read_text(encoding="utf-8")
    regions, inside, current = [], False, []
    for line in text.splitlines():
        if line.startswith(END_MARKER):
            inside = False
            regions.append("\n".join(current).strip("\n"))
            current = []
        elif line.startswith(MARKER):
            inside = True
        elif inside:
            current.append(line)
    if inside:
        regions.append("\n".join(current).strip("\n"))
    if not regions:
        raise TinyLMError(f"{module_name} has no {MARKER!r} region to export")
    body = "\n\n\n".join(regions) + "\n"
    imports = [node.lineno for node in ast.walk(ast.parse(body))
               if isinstance(node, ast.Import | ast.ImportFrom)]
    if imports:
        raise TinyLMError(f"{module_name}: an export region imports (region line {imports[0]}); "
                          f"move the import above the region")
    return body


def _section(title: str, body: str) -> str:
    bar = "# " + "=" * 98
    return f"{bar}\n# {title}\n{bar}\n\n{body}"


def _export_spec(family: str, kind: str):
    """The family record's ExportSpec, checked along with the tokenizer kind."""
    from tinylm.models import get_family

    spec = get_family(family).export
    if spec is None:
        raise TinyLMError(f"export of family {family!r} not supported yet (its family record "
                          f"declares no single-file export)")
    if kind not in TOKENIZER_SOURCES:
        raise TinyLMError(f"export of tokenizer kind {kind!r} not supported (known: "
                          f"{', '.join(sorted(TOKENIZER_SOURCES))})")
    return spec


def _check_config_fields(family: str, model_config: dict) -> None:
    """Every setting of the checkpoint must be a field of the family's config class: one the
    code does not know would otherwise be silently dropped."""
    import dataclasses

    from tinylm.models import get_family

    config_class = get_family(family).config_class
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(model_config) - known)
    if unknown:
        raise TinyLMError(f"export of this {family} checkpoint not supported: its config class "
                          f"{config_class.__name__} does not know the setting(s) "
                          f"{', '.join(unknown)}")


# --------------------------------------------------------------------------- tokenizer data

def tokenizer_data(tokenizer) -> dict:
    """What the exported tokenizer part needs, as plain JSON-able data."""
    if tokenizer.specials:  # the standalone encoders know no appended tokens (yet)
        raise TinyLMError(f"export of a {tokenizer.kind} tokenizer with special tokens "
                          f"({', '.join(tokenizer.specials)}) is not supported yet")
    if tokenizer.kind == "bytes":
        return {"kind": "bytes"}
    if tokenizer.kind == "bpe":
        return _bpe_data(tokenizer)
    if tokenizer.kind == "unigram":
        return _unigram_data(tokenizer)
    raise TinyLMError(f"no export data for tokenizer kind {tokenizer.kind!r}")


def _bpe_data(tokenizer) -> dict:
    """Byte -> id table, merges as (left, right, merged) ids in rank order, EOS id.

    Refuses settings the standalone encoder does not implement, and checks that every id's
    bytes, rebuilt from the merges as the exported file does, are the tokenizer's own.
    """
    from tinylm.tokenizers.bpe import byte_to_char_table

    hf = json.loads(tokenizer.to_dict()["hf_json"])
    model, pre = hf.get("model") or {}, hf.get("pre_tokenizer") or {}
    expected_model = {"type": "BPE", "dropout": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "byte_fallback": False, "ignore_merges": False}
    odd = [f"model.{k}={model.get(k)!r}" for k, v in expected_model.items() if model.get(k) != v]
    if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex",
                                                                                      True):
        odd.append(f"pre_tokenizer={pre!r}")
    if hf.get("normalizer") is not None:
        odd.append(f"normalizer={hf['normalizer']!r}")
    if odd:
        raise TinyLMError(f"this BPE tokenizer uses settings the single-file encoder does not "
                          f"implement: {', '.join(odd)}")
    vocab = model["vocab"]
    byte_ids = [vocab[ch] for ch in byte_to_char_table()]
    merges: list[int] = []
    for pair in model["merges"]:
        left, right = pair.split(" ") if isinstance(pair, str) else pair
        merges += [vocab[left], vocab[right], vocab[left + right]]
    data = {"kind": "bpe", "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
            "byte_ids": byte_ids, "merges": merges}
    rebuilt = [b""] * tokenizer.vocab_size
    for byte, token in enumerate(byte_ids):
        rebuilt[token] = bytes([byte])
    for j in range(0, len(merges), 3):
        rebuilt[merges[j + 2]] = rebuilt[merges[j]] + rebuilt[merges[j + 1]]
    wrong = [i for i in range(tokenizer.vocab_size) if rebuilt[i] != tokenizer.decode_bytes([i])]
    if wrong:
        raise TinyLMError(f"BPE ids {wrong[:5]} are not byte tokens or merges; the single-file "
                          f"encoder cannot rebuild them")
    return data


def _unigram_data(tokenizer) -> dict:
    """Each piece's text, score and type, read from the SentencePiece model; refuses settings
    the standalone encoder does not implement (it follows tinylm's training settings)."""
    proto = base64.b64decode(tokenizer.to_dict()["sentencepiece_model"])
    pieces, scores, types, specs = [], [], [], {2: {}, 3: {}}
    for number, value in _proto_fields(proto):
        if number == 1:  # a SentencePiece: 1 piece, 2 score (float32), 3 type (default 1)
            piece = dict(_proto_fields(value))
            pieces.append(piece.get(1, b"").decode("utf-8"))
            scores.append(struct.unpack("<f", piece[2])[0] if 2 in piece else 0.0)
            types.append(piece.get(3, 1))
        elif number in specs:  # 2 trainer spec, 3 normalizer spec
            specs[number] = dict(_proto_fields(value))
    trainer, normalizer = specs[2], specs[3]
    settings = {"model_type (1 = unigram)": trainer.get(3, 1), "byte_fallback": trainer.get(35, 0),
                "treat_whitespace_as_suffix": trainer.get(24, 0),
                "normalization": normalizer.get(1, b"nmt_nfkc").decode(),
                "add_dummy_prefix": normalizer.get(3, 1),
                "remove_extra_whitespaces": normalizer.get(4, 1),
                "escape_whitespaces": normalizer.get(5, 1)}
    wanted = {"model_type (1 = unigram)": 1, "byte_fallback": 0, "treat_whitespace_as_suffix": 0,
              "normalization": "identity", "add_dummy_prefix": 0, "remove_extra_whitespaces": 0,
              "escape_whitespaces": 1}
    odd = [f"{k}={v!r}" for k, v in settings.items() if wanted[k] != v]
    odd += [f"piece type {t}" for t in sorted(set(types) - {1, 2, 3, 4})]
    if odd or types.count(2) != 1:
        raise TinyLMError(f"this unigram tokenizer uses settings the single-file encoder does not "
                          f"implement: {', '.join(odd) or 'not exactly one <unk> piece'}")
    data = {"kind": "unigram", "eos_id": tokenizer.eos_id, "pieces": pieces, "scores": scores,
            "types": types}
    if len(pieces) != tokenizer.vocab_size:
        raise TinyLMError("the unigram model's pieces do not match the tokenizer's vocabulary")
    return data


def _proto_fields(buf: bytes):
    """(field number, value) of a protobuf message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, i = buf[i:i + width], i + width
        else:
            raise TinyLMError(f"unreadable SentencePiece model (wire type {wire})")
        yield number, value


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


# --------------------------------------------------------------------------- rendering

def _literal(name: str, value) -> str:
    """`NAME = value` as Python source; long lists are wrapped, not one item per line."""
    if isinstance(value, dict):
        lines = [f"{name} = {{"]
        for key, item in value.items():
            if isinstance(item, list) and len(item) > 16:
                lines.append(f"    {key!r}: [\n{_wrapped(item, 8)}\n    ],")
            else:
                lines.append(f"    {key!r}: {item!r},")
        return "\n".join(lines) + "\n}\n"
    return f"{name} = {pprint.pformat(value, width=96, sort_dicts=False)}\n"


def _wrapped(items: list, indent: int, width: int = 100) -> str:
    """Items' reprs, comma-separated, filled into lines (an item is never split)."""
    lines, line = [], " " * indent
    for item in items:
        text = repr(item) + ","
        if len(line) + 1 + len(text) > width and line.strip():
            lines.append(line)
            line = " " * indent
        line += ("" if not line.strip() else " ") + text
    return "\n".join(lines + [line])


def _docstring(info: dict) -> str:
    import_name = info["stem"] if info["stem"].isidentifier() else "infer"
    weights = ("embedded at the end of this file" if info["embedded"] else
               f"in {info['weights_file']}, beside this file")
    summary = textwrap.fill(
        f"{info['params']:,} parameters, {info['kind']} tokenizer (vocab {info['vocab']:,}), "
        f"context {info['context']:,}; weights {weights}. Written by `tinylm export "
        f"single-file` (tinylm {info['tinylm']}, torch {info['torch']}) from checkpoint "
        f"{info['source']}.", 96)
    return f'''#!/usr/bin/env python3
"""{info["stem"]}: a tinylm `{info["family"]}` language model in one file; needs only torch.

{summary}

    python {info["stem"]}.py --prompt "Once upon a time" -n 100 --temperature 0.8 --top-k 40

prints the prompt and its continuation: the same text as `tinylm generate CHECKPOINT` with the
same flags, on the same torch version and device. From Python:

    from {import_name} import load_model, generate
    model, config = load_model()
    print(generate(model, "Once upon a time", temperature=0.8, top_k=40, seed=0))

generate(model, prompt, temperature, top_k, repetition_penalty, seed, max_new_tokens, top_p)
returns the continuation; generate_ids works on token ids; load_model(path) loads other
weights of the same shape (a .safetensors file or a tinylm checkpoint folder).
{info["notes"]}"""
'''


def _plain(text: str) -> str:
    """Text safe inside the generated docstring: printable ASCII, no quotes or backslashes."""
    return "".join(ch if " " <= ch <= "~" and ch not in "\\\"" else "_" for ch in text)


def model_source(spec) -> str:
    """The family's model code: the regions of its modules in order, each module once, then
    the names the runtime uses."""
    seen, parts = set(), []
    for name in spec.sources:
        if name not in seen:
            seen.add(name)
            parts.append(f"# from {name}\n\n" + region_source(name))
    return "\n\n".join(parts) + f"\n\nModel, ModelConfig = {spec.model}, {spec.config}\n"


def render(family: str, model_config: dict, tok_data: dict, weights_b64: str | None,
           weights_sha256: str, weights_file: str, info: dict) -> str:
    """The whole exported file as text."""
    spec = _export_spec(family, tok_data["kind"])
    settings = (_literal("FAMILY", family) + _literal("MODEL_CONFIG", model_config)
                + _literal("WEIGHTS_SHA256", weights_sha256)
                + _literal("WEIGHTS_FILE", weights_file)
                + _literal("TOKENIZER_META", info["tokenizer_meta"])
                + _literal("DEFAULT_PROMPT", "Once upon a time"))
    engine = "\n\n".join(f"# from {name}\n\n" + region_source(name) for name in ENGINE_SOURCES)
    code = [_section("settings", settings),
            _section(f"model: the {family} family", model_source(spec)),
            _section(f"tokenizer: {tok_data['kind']}", part_source(TOKENIZER_SOURCES[
                tok_data["kind"]])),
            _section("sampling and the decode loop", engine),
            _section("loading, generation, command line", part_source("runtime.py"))]
    if weights_b64 is None:
        weights = "WEIGHTS = None  # see WEIGHTS_FILE\n"
    else:
        lines = "\n".join(weights_b64[i:i + WEIGHTS_LINE]
                          for i in range(0, len(weights_b64), WEIGHTS_LINE))
        weights = f'WEIGHTS = """\n{lines}\n"""\n'
    data = _section("data: tokenizer tables and weights (base64 of a safetensors file)",
                    _literal("TOKENIZER", tok_data) + "\n" + weights)
    main = 'if __name__ == "__main__":\n    sys.exit(main())\n'
    return "\n\n".join([_docstring(info) + "\n" + HEADER_IMPORTS, *code, data, main])


# --------------------------------------------------------------------------- export

def export_single_file(checkpoint: str | Path, out: str | Path, *, weights: str = "embed",
                       check: bool = True) -> Path:
    """Write the single-file inference script for `checkpoint` to `out` and return its path.

    weights: "embed" (base64 inside the file) or "beside" (`<out stem>.safetensors` next to
    it). check: load the written file and compare it with tinylm (see the module docstring).
    """
    import torch

    from tinylm import __version__
    from tinylm.io import write_text_atomic
    from tinylm.train.checkpoint import load_checkpoint

    if weights not in ("embed", "beside"):
        raise TinyLMError(f"weights must be 'embed' or 'beside', got {weights!r}")
    ckpt = load_checkpoint(checkpoint)
    family, kind = ckpt.meta["family"], ckpt.tokenizer.kind
    spec = _export_spec(family, kind)  # refuse early, before any work
    _check_config_fields(family, ckpt.meta["model_config"])
    blob = (Path(checkpoint) / "model.safetensors").read_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    if sha != ckpt.meta["files"]["model.safetensors"]:
        raise TinyLMError(f"{checkpoint}: model.safetensors changed while exporting; try again")
    out = Path(out)
    if out.suffix != ".py":
        raise TinyLMError(f"the output must be a .py file, got {out}")
    model = ckpt.build_model()
    info = {"family": family, "params": sum(p.numel() for p in model.parameters()),
            "kind": kind, "vocab": ckpt.tokenizer.vocab_size,
            "context": model.config.context_len, "embedded": weights == "embed",
            "weights_file": out.with_suffix(".safetensors").name, "tinylm": __version__,
            "torch": torch.__version__, "stem": _plain(out.stem),
            "source": f"{_plain(Path(checkpoint).resolve().name)} (step {ckpt.step})",
            "notes": f"\n{spec.notes}\n" if spec.notes else "",
            "tokenizer_meta": ckpt.tokenizer.describe()}
    text = render(family, ckpt.meta["model_config"], tokenizer_data(ckpt.tokenizer),
                  base64.b64encode(blob).decode("ascii") if weights == "embed" else None,
                  sha, info["weights_file"], info)
    if weights == "beside":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".safetensors").write_bytes(blob)
    write_text_atomic(out, text)
    out.chmod(0o755)  # a script with a #! line; mkstemp made it 0600
    if check:
        check_export(out, model, ckpt.tokenizer)
    return out


# --------------------------------------------------------------------------- self-check

def import_exported(path: str | Path):
    """Import a written file as a fresh module (not kept in sys.modules)."""
    name = f"_tinylm_export_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def check_export(path: Path, model, tokenizer) -> None:
    """Load the exported file and compare it with tinylm: tokenizer ids on CHECK_TEXT, logits
    bit for bit on a prompt that fills the context, and a short sampled continuation."""
    import torch

    from tinylm.infer.generate import generate_ids
    from tinylm.infer.sampling import SamplingConfig

    module = import_exported(path)
    exported, _ = module.load_model()
    ids = tokenizer.encode(CHECK_TEXT)
    if exported.tokenizer.encode(CHECK_TEXT) != ids:
        raise TinyLMError(f"{path}: the exported tokenizer encodes differently from tinylm's "
                          f"(please report this as a bug)")
    context = model.config.context_len
    window = torch.tensor([(ids * (context // len(ids) + 1))[:context]])
    with torch.inference_mode():  # through a KV cache, as generation calls the model
        same = torch.equal(exported(window, exported.new_cache(1, context), 0),
                           model(window, model.new_cache(1, context), 0))
    settings = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}
    ours = generate_ids(model, [ids[:8]], 16, SamplingConfig(**settings), seed=0,
                        eos_id=tokenizer.eos_id)[0]
    theirs = module.generate_ids(exported, ids[:8], 16, seed=0, eos_id=tokenizer.eos_id,
                                 **settings)
    if not same or ours != theirs:
        raise TinyLMError(f"{path}: the exported model does not reproduce tinylm's "
                          f"{'logits' if not same else 'sampled ids'} exactly (please report "
                          f"this as a bug)")
