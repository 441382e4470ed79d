"""`tinylm export c`: a checkpoint as a folder that a C compiler turns into a program.

    DIR/run.c          the engine: one C99 file, libc and libm only (tinylm/export/c/run.c)
    DIR/model.bin      the model: header, block table, sha256 of the payload, tensors
    DIR/tokenizer.bin  bytes or byte-level BPE (byte -> id table, ranked merges, and the
                       pattern's character classes over all code points)
    DIR/Makefile       `make` builds ./run; README.txt gives the cc lines and an example
    DIR/model_data.h   with --freestanding: model and tokenizer as const arrays, with the
                       sizes of every static buffer, for a build without malloc or files;
                       with --fixed-point its numbers are Q16.16 integers

What goes into model.bin comes from the family record's `c_export` (a `CEngineSpec`), never
from a branch on the family's name here; this module checks the spec's tensors against the
layout its settings imply (`expected_layout`) and writes them. The sha256 of the payload sits
in the header; run.c recomputes it at load and refuses a damaged file (the freestanding build,
whose data is compiled in, skips that check).

Format (little-endian, 4-byte fields, version 1): "tinylmC\\0" | version | number format
(0 float32, 1 Q16.16) | field count | FIELDS | (block, loop) per block application | sha256 |
tensors. A float tensor is its values (a block matrix or an untied head in tiles of 64 output
rows, each stored (in, 64), which run.c's matvec reads as one stream); a ternary matrix is one
scale per row, then its trits packed four to a byte (bitnet_pack's "2bit" codes), padded to 4
bytes.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from importlib import resources
from pathlib import Path

import torch

from tinylm.errors import TinyLMError

MODEL_MAGIC, TOKENIZER_MAGIC, VERSION = b"tinylmC\0", b"tinylmT\0", 1
FIELDS = ("vocab", "dim", "emb_dim", "heads", "kv_heads", "head_dim", "ffn", "context",
          "blocks", "apps", "tied", "ternary", "act_quant", "lora_rank", "lora_mask",
          "lora_sets", "lora_block", "loop_embs", "rot_half", "sparse_block", "sparse_top_k",
          "sparse_window", "eps")  # the order of run.c's F_ enum
LORA_TARGETS = ("wqkv", "wo", "w13", "w2")  # run.c's T_ enum
Q16 = 1 << 16
OUTPUTS = ("run.c", "model.bin", "tokenizer.bin", "Makefile", "README.txt")
DEFAULT_PROMPT, DEFAULT_NEW = "Once upon a time", 64


# --------------------------------------------------------------------------- layout

def _block_shapes(s: dict) -> dict[str, tuple[int, int]]:
    """(out, in) of the four block matrices."""
    q_dim, kv_dim = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
    return {"wqkv": (q_dim + 2 * kv_dim, s["dim"]), "wo": (s["dim"], q_dim),
            "w13": (2 * s["ffn"], s["dim"]), "w2": (s["dim"], s["ffn"])}


def expected_layout(s: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(what, shape, kind) of every tensor run.c reads, in its order; kind "float", "matrix"
    (a float (out, in) matrix the file stores in matvec's tiles, see `tiled`) or "ternary".
    `what` names the slot (a spec's names may differ); shapes are PyTorch's."""
    emb, matrices = s["emb_dim"] or s["dim"], _block_shapes(s)
    kind = "ternary" if s["ternary"] else "matrix"
    rows = [("tok_emb", (s["vocab"], emb), "float")]
    if s["emb_dim"]:
        rows.append(("emb_proj", (s["dim"], s["emb_dim"]), "float"))
    for b in range(s["blocks"]):
        rows += [(f"block {b} attn_norm", (s["dim"],), "float"),
                 (f"block {b} wqkv", matrices["wqkv"], kind),
                 (f"block {b} wo", matrices["wo"], kind),
                 (f"block {b} mlp_norm", (s["dim"],), "float"),
                 (f"block {b} w13", matrices["w13"], kind),
                 (f"block {b} w2", matrices["w2"], kind)]
    for t, name in enumerate(LORA_TARGETS):
        if s["lora_rank"] and s["lora_mask"] >> t & 1:
            out, inp = matrices[name]
            rows += [(f"lora_A {name}", (s["lora_sets"], s["lora_rank"], inp), "float"),
                     (f"lora_B {name}", (s["lora_sets"], out, s["lora_rank"]), "float")]
    if s["loop_embs"]:
        rows.append(("loop_emb", (s["loop_embs"], s["dim"]), "float"))
    rows.append(("norm", (s["dim"],), "float"))
    if not s["tied"]:
        rows.append(("lm_head", (s["vocab"], s["dim"]), "matrix"))
    rows += [("rope_cos", (s["context"], s["rot_half"]), "float"),
             ("rope_sin", (s["context"], s["rot_half"]), "float")]
    return rows


def checked_tensors(spec, where: str) -> list[tuple[str, object]]:
    """The spec's tensors, each checked against its slot of `expected_layout`."""
    settings = {**spec.settings, "apps": len(spec.applications)}
    missing = [f for f in FIELDS if f not in settings]
    if missing:
        raise TinyLMError(f"{where}: the family's C export lacks settings {missing}")
    layout, tensors = expected_layout(settings), list(spec.tensors)
    if len(layout) != len(tensors):
        raise TinyLMError(f"{where}: the family's C export gives {len(tensors)} tensors where "
                          f"its settings imply {len(layout)}")
    for (slot, shape, kind), (name, value) in zip(layout, tensors):
        got_kind = "ternary" if isinstance(value, tuple) else "float"
        got_shape = tuple(value[0].shape if got_kind == "ternary" else value.shape)
        if (got_kind, got_shape) != (kind.replace("matrix", "float"), shape):
            raise TinyLMError(f"{where}: tensor {name} is {got_kind} {list(got_shape)} where the "
                              f"engine reads {slot} as {kind} {list(shape)}")
    return tensors


# --------------------------------------------------------------------------- model image

def _numbers(values: torch.Tensor, fixed: bool, name: str) -> bytes:
    flat = values.detach().reshape(-1).double()
    if not torch.isfinite(flat).all():
        raise TinyLMError(f"tensor {name} holds NaN or infinity; the checkpoint is broken")
    if not fixed:
        return flat.float().numpy().astype("<f4").tobytes()
    scaled = torch.round(flat * Q16)
    if scaled.numel() and scaled.abs().max() >= 2 ** 31:
        raise TinyLMError(f"tensor {name} has values beyond Q16.16's +-32768")
    return scaled.to(torch.int64).numpy().astype("<i4").tobytes()


OUT_TILE = 64  # run.c's matvec tile


def tiled(weight: torch.Tensor) -> torch.Tensor:
    """A (out, in) matrix in run.c's matvec layout: output tiles of 64 rows, each stored
    transposed, (in, 64), the last tile narrower; flat."""
    return torch.cat([weight[o:o + OUT_TILE].t().reshape(-1)
                      for o in range(0, weight.shape[0], OUT_TILE)])


def _pack_2bit(trits: torch.Tensor) -> bytes:
    from tinylm.export.bitnet_pack import pack_trits

    data = pack_trits(trits, "2bit").numpy().tobytes()
    return data + b"\0" * (-len(data) % 4)  # the next tensor starts on a 4-byte boundary


def model_image(spec, fixed: bool = False, where: str = "model") -> bytes:
    """The bytes of model.bin (float32) or of its Q16.16 twin for the fixed-point build."""
    tensors = checked_tensors(spec, where)
    settings = {**spec.settings, "apps": len(spec.applications)}
    chunks = []
    for (_, _, kind), (name, value) in zip(expected_layout(settings), tensors):
        if kind == "ternary":  # per-row scales, then 2-bit trits
            trits, row_scale = value
            chunks += [_numbers(row_scale, fixed, name), _pack_2bit(trits)]
        else:
            chunks.append(_numbers(tiled(value) if kind == "matrix" else value, fixed, name))
    payload = b"".join(chunks)
    eps = float(settings["eps"])
    eps_field = (round(eps * 2 ** 32) if fixed
                 else struct.unpack("<i", struct.pack("<f", eps))[0])
    if fixed and not 0 < eps_field < 2 ** 31:
        raise TinyLMError(f"norm eps {eps} does not fit the fixed-point format")
    fields = [int(settings[f]) for f in FIELDS[:-1]] + [eps_field]
    head = MODEL_MAGIC + struct.pack(f"<3I{len(fields)}i", VERSION, int(fixed), len(fields),
                                     *fields)
    table = struct.pack(f"<{2 * len(spec.applications)}i",
                        *[v for app in spec.applications for v in app])
    return head + table + hashlib.sha256(payload).digest() + payload


# --------------------------------------------------------------------------- tokenizer

def tokenizer_image(tokenizer) -> bytes:
    """The bytes of tokenizer.bin (kinds bytes and bpe)."""
    from tinylm.export.single_file import tokenizer_data

    if tokenizer.kind not in ("bytes", "bpe"):
        raise TinyLMError(f"the C engine has no {tokenizer.kind} tokenizer (it has bytes and "
                          f"bpe)")
    data = tokenizer_data(tokenizer)  # refuses BPE settings the standalone encoders lack
    head = TOKENIZER_MAGIC + struct.pack("<4i", VERSION, 0 if tokenizer.kind == "bytes" else 1,
                                         tokenizer.vocab_size, tokenizer.eos_id)
    if tokenizer.kind == "bytes":
        return head
    merges, runs = data["merges"], class_runs()
    return head + struct.pack(f"<256ii{len(merges)}ii{len(runs)}I", *data["byte_ids"],
                              len(merges) // 3, *merges, len(runs), *runs)


@functools.lru_cache(maxsize=1)
def class_runs() -> tuple[int, ...]:
    """GPT-2's pattern classes over every code point, as runs: (first code point << 2 |
    class), class 0 white space, 1 letter, 2 number, 3 other; the classes of the standalone
    encoder's `char_class` (tok_bpe.py), which match `tokenizers` (1,610 runs, 6.4 KB). Built
    from the category table directly, as `char_class` per code point takes seconds."""
    import unicodedata

    import numpy as np

    from tinylm.export.standalone.tok_bpe import NEWER_UNICODE, WHITESPACE

    first = {"L": 1, "N": 2}
    letters = "".join([unicodedata.category(chr(p))[0] for p in range(0x110000)])
    table = bytes(first.get(chr(b), 3) for b in range(256))  # category letter -> class
    kinds = np.frombuffer(letters.encode("ascii").translate(table), dtype=np.uint8).copy()
    for first_point, last_point, kind in NEWER_UNICODE:  # unassigned in Python's tables
        kinds[first_point:last_point + 1] = first[kind]
    for ch in WHITESPACE:
        kinds[ord(ch)] = 0
    starts = np.flatnonzero(np.diff(kinds, prepend=255))
    return tuple(int(p) << 2 | int(kinds[p]) for p in starts)


# --------------------------------------------------------------------------- freestanding

def static_sizes(spec, prompt_bytes: int, max_new: int) -> dict[str, int]:
    """The TL_ constants of model_data.h: sizes of run.c's static buffers."""
    s = spec.settings
    q_dim, kv_dim = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
    return {"TL_DIM": s["dim"], "TL_QDIM": q_dim, "TL_QKV": q_dim + 2 * kv_dim,
            "TL_KV_DIM": kv_dim, "TL_FFN": s["ffn"], "TL_VOCAB": s["vocab"],
            "TL_EMB": s["emb_dim"], "TL_CONTEXT": s["context"],
            "TL_APPS": len(spec.applications), "TL_BLOCKS": s["blocks"],
            "TL_MAX_IN": max(s["dim"], s["ffn"], q_dim), "TL_MAX_PROMPT": prompt_bytes,
            "TL_MAX_NEW": max_new}


def buffer_bytes(sizes: dict[str, int]) -> int:
    """Bytes of run.c's static buffers in the freestanding build (4-byte numbers; the block
    table of pointers counted at 8 bytes each, a 64-bit core)."""
    t = sizes
    numbers = (3 * t["TL_DIM"] + t["TL_QKV"] + t["TL_QDIM"] + 2 * t["TL_FFN"] + t["TL_MAX_IN"]
               + t["TL_VOCAB"] + t["TL_EMB"] + 1 + 2 * t["TL_CONTEXT"] + 1
               + 2 * t["TL_APPS"] * t["TL_CONTEXT"] * t["TL_KV_DIM"])
    ids = 2 * t["TL_APPS"] + t["TL_MAX_PROMPT"] + t["TL_MAX_NEW"] + t["TL_CONTEXT"]
    text = (t["TL_MAX_PROMPT"] + 1) * (4 + 8)
    blocks = t["TL_BLOCKS"] * (2 + 4 * 5) * 8
    scores = 8 * t["TL_CONTEXT"]  # int64 sums in fixed point (float32 needs half)
    return 4 * numbers + 4 * ids + text + t["TL_CONTEXT"] + blocks + scores


def _words(data: bytes) -> str:
    padded = data + b"\0" * (-len(data) % 4)
    words = struct.unpack(f"<{len(padded) // 4}I", padded)
    lines = [", ".join(f"0x{w:08x}u" for w in words[i:i + 8]) for i in range(0, len(words), 8)]
    return "    " + ",\n    ".join(lines)


def _c_string(text: str) -> str:
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        out.append(ch if 32 <= byte < 127 and ch not in '"\\?' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def model_data_header(spec, model_bytes: bytes, tok_bytes: bytes, fixed: bool, prompt: str,
                      max_new: int, source: str) -> str:
    """model_data.h: the images as uint32 words (4-byte aligned; a little-endian core reads
    them as the file's bytes) and the sizes of every static buffer."""
    prompt_bytes = max(len(prompt.encode("utf-8")), 256)
    sizes = static_sizes(spec, prompt_bytes, max_new)
    defines = "\n".join(f"#define {k} {v}" for k, v in sizes.items())
    numbers = "Q16.16 fixed point" if fixed else "float32"
    return (f"/* model_data.h -- written by tinylm export c --freestanding from {source}.\n"
            f" * Numbers: {numbers}. Static buffers: {buffer_bytes(sizes):,} bytes; model "
            f"{len(model_bytes):,} bytes, tokenizer {len(tok_bytes):,}.\n"
            f" * Words are little-endian images of model.bin and tokenizer.bin. */\n"
            f"#ifndef TINYLM_MODEL_DATA_H\n#define TINYLM_MODEL_DATA_H\n"
            f"#include <stdint.h>\n{defines}\n"
            f"#define TL_TOKENIZER_BYTES {len(tok_bytes)}\n"
            f"#define TL_DEFAULT_PROMPT {_c_string(prompt)}\n"
            f"#define TL_DEFAULT_NEW {min(DEFAULT_NEW, max_new)}\n"
            f"#define TL_FIXED_POINT {int(fixed)}\n"
            f"static const uint32_t tl_model_words[] = {{\n{_words(model_bytes)}\n}};\n"
            f"static const uint32_t tl_tokenizer_words[] = {{\n{_words(tok_bytes)}\n}};\n"
            f"#endif\n")


# --------------------------------------------------------------------------- build notes

def makefile(freestanding: bool, fixed: bool) -> str:
    lines = ["# written by tinylm export c", "CC ?= cc", "CFLAGS ?= -O2", "",
             "run: run.c", "\t$(CC) $(CFLAGS) -std=c99 -o run run.c -lm", ""]
    if freestanding:
        flag = "-DTINYLM_FIXED" if fixed else "-DTINYLM_FREESTANDING"
        libm = "" if fixed else " -lm"
        lines += ["RISCV_CC ?= riscv64-linux-gnu-gcc", "",
                  "run-freestanding: run.c model_data.h",
                  f"\t$(CC) $(CFLAGS) -std=c99 {flag} -o run-freestanding run.c{libm}", "",
                  "run-riscv: run.c model_data.h",
                  f"\t$(RISCV_CC) -O2 -std=c99 -static {flag} -o run-riscv run.c{libm}", ""]
    return "\n".join(lines)


def readme(info: dict) -> str:
    free = ""
    if info["freestanding"]:
        flag = "-DTINYLM_FIXED" if info["fixed"] else "-DTINYLM_FREESTANDING"
        libm = "" if info["fixed"] else " -lm"
        numbers = "Q16.16 integers, no FPU needed" if info["fixed"] else "float32"
        free = (f"\nFreestanding build (model_data.h: weights as const arrays, static buffers, "
                f"no malloc, no files;\n{numbers}, greedy decoding):\n"
                f"  cc -O2 -std=c99 {flag} -o run-freestanding run.c{libm}\n"
                f"  riscv64-linux-gnu-gcc -O2 -std=c99 -static {flag} -o run-riscv run.c{libm}\n"
                f"  qemu-riscv64 ./run-riscv \"Once upon\" 32     # argv: [prompt [n]]\n")
    return (f"tinylm C engine export of {info['source']} ({info['family']} family, "
            f"{info['params']:,} parameters, {info['kind']} tokenizer).\n\n"
            f"Build and run (C99, libc and libm only):\n"
            f"  cc -O2 -std=c99 -o run run.c -lm        # or: make\n"
            f"  ./run model.bin tokenizer.bin --prompt \"Once upon a time\" -n 100 "
            f"--temperature 0\n"
            f"  ./run model.bin tokenizer.bin --help    # sampler flags as tinylm generate\n\n"
            f"Faster on the machine you build on: cc -O3 -march=native -std=c99 -o run run.c "
            f"-lm\n"
            f"Greedy output (--temperature 0) equals `tinylm generate --temperature 0`; sampled "
            f"text uses the engine's own random generator.\n{free}")


# --------------------------------------------------------------------------- export

def engine_source() -> str:
    return resources.files("tinylm.export").joinpath("c/run.c").read_text(encoding="utf-8")


def load_for_export(checkpoint):
    """(checkpoint, model, spec) of a checkpoint whose family has a C export."""
    from tinylm.models import get_family
    from tinylm.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    record = get_family(ckpt.meta["family"])
    if record.c_export is None:
        raise TinyLMError(f"family {record.name!r} has no C export (its family record declares "
                          f"no c_export)")
    model = ckpt.build_model()
    try:
        spec = record.c_export(model)
    except ValueError as err:
        raise TinyLMError(f"{checkpoint}: cannot export to C: {err}") from None
    return ckpt, model, spec


def output_paths(out: Path, freestanding: bool) -> list[Path]:
    return [out / name for name in (*OUTPUTS, *(("model_data.h",) if freestanding else ()))]


def export_c(checkpoint: str | Path, out: str | Path, *, freestanding: bool = False,
             fixed: bool = False, prompt: str = DEFAULT_PROMPT, max_new: int = 256) -> dict:
    """Write the C engine folder for `checkpoint`; returns what was written (paths, sizes)."""
    from tinylm.io import write_bytes_atomic, write_text_atomic

    if fixed and not freestanding:
        raise TinyLMError("--fixed-point is a freestanding build: add --freestanding")
    if max_new < 1:
        raise TinyLMError(f"--max-new must be >= 1, got {max_new}")
    ckpt, model, spec = load_for_export(checkpoint)
    where = str(checkpoint)
    tok_bytes = tokenizer_image(ckpt.tokenizer)
    model_bytes = model_image(spec, False, where)
    out = Path(out)
    info = {"source": f"{Path(checkpoint).resolve().name} (step {ckpt.step})",
            "family": ckpt.meta["family"], "params": sum(p.numel() for p in model.parameters()),
            "kind": ckpt.tokenizer.kind, "freestanding": freestanding, "fixed": fixed}
    write_text_atomic(out / "run.c", engine_source())
    write_bytes_atomic(out / "model.bin", model_bytes)
    write_bytes_atomic(out / "tokenizer.bin", tok_bytes)
    write_text_atomic(out / "Makefile", makefile(freestanding, fixed))
    write_text_atomic(out / "README.txt", readme(info))
    written = {"model.bin": len(model_bytes), "tokenizer.bin": len(tok_bytes)}
    if freestanding:
        image = model_image(spec, fixed, where) if fixed else model_bytes
        header = model_data_header(spec, image, tok_bytes, fixed, prompt, max_new,
                                   info["source"])
        write_text_atomic(out / "model_data.h", header)
        sizes = static_sizes(spec, max(len(prompt.encode("utf-8")), 256), max_new)
        written["model_data.h"] = len(header)
        written["static_buffers"] = buffer_bytes(sizes)
    return written


def flops_per_token(spec, position: int) -> int:
    """Multiply-adds x 2 of one decoding step at `position` (dense attention), for the
    benchmark's compute-limit figure: every matrix once, plus q.k and p.v over pos + 1 keys."""
    s = spec.settings
    shapes = _block_shapes(s)
    per_block = sum(o * i for o, i in shapes.values())
    attention = 2 * s["heads"] * s["head_dim"] * (position + 1)
    head = s["vocab"] * (s["emb_dim"] or s["dim"]) + (s["dim"] * s["emb_dim"] if s["emb_dim"]
                                                      else 0)
    return 2 * (len(spec.applications) * (per_block + attention) + head)


def payload_floats(spec) -> int:
    """Float values in the model (the bandwidth a step reads, in 4-byte words)."""
    return sum(math.prod(v.shape) for _, v in spec.tensors if not isinstance(v, tuple))
