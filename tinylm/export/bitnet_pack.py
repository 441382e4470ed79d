"""Packed BitNet files (.tlm): ternary weights at 2 or 1.6 bits each, and a model that runs
straight from them.

A BitNet checkpoint holds fp32 *latent* weights (what trains and merges, 4 bytes a weight);
the model only ever computes with their ternary quantization (`bitnet.ternary`): one trit per
weight plus one absmean scale per matrix. This file stores just that:

- `2bit`: four weights a byte, each as the code trit + 1 in two bits (weight i of a group in
  bits 2i..2i+1); code 3 never occurs. 2 bits a weight, like bitnet.cpp's I2_S.
- `base3`: five weights a byte, byte = sum_i (trit_i + 1) * 3^i, at most 242 (3^5 = 243 <=
  256). 1.6 bits a weight, within 1.3% of the log2(3) = 1.585 bits of information.
  Both are written by hand because no library packs trits; each tensor is packed flat (row
  after row), its tail group padded with zero trits.
- Per matrix one float32 scale (q, k and v of the fused `wqkv`, gate and up of `w13` each
  have their own, as the model computes them).
- Every other tensor (the tied embedding, the norm gains) in fp16 or fp32 (`float_dtype`).
- The tokenizer, as its tinylm JSON compressed with zlib (about 1.8 KB for unigram-192).

Layout, little-endian, format version 1:

    magic "TLMBITNT" (8 bytes) | version u32 | header length u32 | header (UTF-8 JSON)
    | payload | sha256 of everything before it (32 bytes)

The header names the family, the model config, the packing, the float dtype, the tokenizer's
byte count and a sha256 of the tensor layout (names, shapes, kinds). The payload has no
table of contents: it is the model's state-dict tensors in order (a ternary tensor: its scales,
then its packed bytes; a float tensor: its raw values), then the tokenizer. The config fixes
the layout, so the loader recomputes every size and refuses a file whose layout hash, length,
checksum or codes do not fit, with one `TinyLMError` line. Nothing is unpickled.

For tiny-tiny-stories (972,800 ternary weights, 35 matrices, 25,984 float values) the payload
is 243,200 + 140 + 103,936 bytes at 2 bits with fp32 floats (the card's "~350 KB quantized")
and 194,570 + 140 + 51,968 at 1.6 bits with fp16 (under 250 KB with header and tokenizer).

Running from packed weights (`load_packed` -> `PackedBitNet`). The trits are unpacked once to
int8 (one byte a weight, a quarter of fp32) and stay int8; they are never turned into fp32
weights at load. Each product widens one int8 matrix to the activation dtype for the length of
one GEMM and scales the output rows afterwards:

    y = (x @ trits^T) * row_scale                         act_quant off
    y = (ints @ trits^T) * (row_scale * step)             act_quant on (ints = round(x / step))

With act_quant on the GEMM is integer arithmetic done in float32: |ints| <= 128 and |trits| <= 1
so every partial sum stays below 128 * 336 < 2^24 and is exact, i.e. the same numbers an
int8 x int8 -> int32 kernel would produce. Why not such a kernel: torch's CPU int8 GEMMs
(`torch._int_mm`, `aten._weight_int8pack_mm`) run as plain loops here. For one 128 -> 384
matrix (torch 2.13, one thread, a shared machine) fp32 took 0.006 ms at batch 1 and 0.08 ms
at batch 64; widening int8 and scaling 0.03 and 0.13 ms; `_int_mm` with the activation
quantization 0.09 and 3.2 ms; `_weight_int8pack_mm` 0.05 and 3.7 ms; and a lookup-table kernel
from torch ops (each packed base-3 byte indexing a 243-entry table of partial sums, gathered by
`index_select` or summed by `embedding_bag`) about 0.05 ms at batch 1 and 0.2 ms at batch 64.
Widening for a fused fp32 GEMM was the fastest torch-only route; real ternary kernels
belong in the native C engine. Against the fp32 latent model, which re-quantizes every
weight on every forward, this skips the quantization entirely. benchmarks/bench_bitnet.py on
the 400-step tiny-tiny-stories checkpoint (act_quant on, one thread, a loaded machine):
latent 77 / 2,910 tok/s at batch 1 / 64, packed 215 / 3,717 (2.8x and 1.3x), and the
quantized weights stored once as fp32, the floor a float GEMM sets, 365 / 7,371; the same
seeded sample came out of the latent and the packed model.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.errors import TinyLMError
from tinylm.models.bitnet import BitLinear, BitNet, bit_linears, quantize_activations

MAGIC = b"TLMBITNT"
VERSION = 1
PREAMBLE = struct.Struct("<8sII")  # magic, version, header length
DIGEST = 32  # sha256 trailer
PER_BYTE = {"2bit": 4, "base3": 5}
FLOAT_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
_BASE3 = torch.tensor([1, 3, 9, 27, 81], dtype=torch.int32)
_SHIFTS = torch.tensor([0, 2, 4, 6], dtype=torch.int32)


# --------------------------------------------------------------------------- trits <-> bytes

def _check_packing(packing: str) -> int:
    if packing not in PER_BYTE:
        raise TinyLMError(f"unknown packing {packing!r}; choose {', '.join(PER_BYTE)}")
    return PER_BYTE[packing]


def packed_size(count: int, packing: str) -> int:
    """Bytes that `count` trits take."""
    return math.ceil(count / _check_packing(packing))


def pack_trits(trits: torch.Tensor, packing: str) -> torch.Tensor:
    """Trits (any shape, values in {-1, 0, 1}) -> uint8 bytes, flat, tail padded with zeros."""
    per = _check_packing(packing)
    codes = trits.reshape(-1).to(torch.int32) + 1  # 0, 1, 2
    if codes.numel() and (codes.min() < 0 or codes.max() > 2):
        raise ValueError("pack_trits takes values in {-1, 0, 1} only")
    codes = F.pad(codes, (0, (-codes.numel()) % per), value=1).view(-1, per)  # (bytes, per)
    weights = (1 << _SHIFTS) if packing == "2bit" else _BASE3
    return (codes * weights).sum(1).to(torch.uint8)


def unpack_trits(data: torch.Tensor, count: int, packing: str) -> torch.Tensor:
    """uint8 bytes -> `count` trits as int8, or a TinyLMError if a byte holds a code that no
    trit packs to (a corrupt file)."""
    _check_packing(packing)
    if data.numel() != packed_size(count, packing):
        raise TinyLMError(f"{data.numel()} bytes cannot hold {count} trits packed {packing}")
    wide = data.to(torch.int32)[:, None]  # (bytes, 1)
    if packing == "2bit":
        codes = (wide >> _SHIFTS) & 3
        bad = bool((codes == 3).any())
    else:
        codes = (wide // _BASE3) % 3
        bad = bool((data > 242).any())
    codes = codes.reshape(-1)
    if bad or bool((codes[count:] != 1).any()):  # padding is always trit 0
        raise TinyLMError(f"packed weights hold codes no ternary value packs to ({packing})")
    return (codes[:count] - 1).to(torch.int8)


# --------------------------------------------------------------------------- layout

def _layout(model: BitNet) -> list[tuple[str, tuple[int, ...], tuple[int, ...] | None]]:
    """(name, shape, parts) of every state-dict tensor in order; parts is None for a float
    tensor and the row counts of its matrices for a ternary one."""
    parts = {f"{name}.weight": module.parts for name, module in model.named_modules()
             if isinstance(module, (BitLinear, PackedTernaryLinear))}
    rows = []
    for name, tensor in _plain_state(model).items():
        rows.append((name, tuple(tensor.shape), parts.get(name)))
    return rows


def _plain_state(model) -> dict[str, torch.Tensor]:
    """The state dict with a PackedTernaryLinear's (trits, row_scale) under `weight`."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith(".trits"):
            state[name[:-len(".trits")] + ".weight"] = tensor
        elif not name.endswith(".row_scale"):
            state[name] = tensor
    return state


def _layout_hash(layout) -> str:
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()


def payload_size(layout, packing: str, float_dtype: str) -> int:
    """Bytes of the tensor part of the payload: the formula the file follows."""
    item = FLOAT_DTYPES[float_dtype].itemsize
    return sum(4 * len(parts) + packed_size(math.prod(shape), packing) if parts
               else math.prod(shape) * item for _, shape, parts in layout)


# --------------------------------------------------------------------------- writing

def export_packed(checkpoint: str | Path, out: str | Path, packing: str = "base3",
                  float_dtype: str = "fp16") -> Path:
    """Write the packed file of a bitnet checkpoint; returns its path."""
    from tinylm import __version__
    from tinylm.tokenizers.base import FORMAT
    from tinylm.train.checkpoint import load_checkpoint

    _check_packing(packing)
    if float_dtype not in FLOAT_DTYPES:
        raise TinyLMError(f"unknown float dtype {float_dtype!r}; choose "
                          f"{', '.join(FLOAT_DTYPES)}")
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model()
    if not isinstance(model, BitNet):
        raise TinyLMError(f"{checkpoint}: a {ckpt.meta['family']} checkpoint; the packed "
                          f"export takes bitnet checkpoints only")
    ternary, state, layout = model.ternary_state(), model.state_dict(), _layout(model)
    chunks = []
    for name, _, parts in layout:
        if parts:
            trits, row_scale = ternary[name]
            starts = [sum(parts[:i]) for i in range(len(parts))]
            chunks.append(row_scale[starts].float().numpy().tobytes())
            chunks.append(pack_trits(trits, packing).numpy().tobytes())
        else:
            chunks.append(state[name].detach().to(FLOAT_DTYPES[float_dtype]).numpy().tobytes())
    tok = ckpt.tokenizer
    tok_json = json.dumps({"format": FORMAT, "kind": tok.kind, **tok.to_dict()},
                          ensure_ascii=False)
    tok_bytes = zlib.compress(tok_json.encode("utf-8"), 9)
    header = {"format": "tinylm-bitnet-packed", "family": ckpt.meta["family"],
              "model_config": ckpt.meta["model_config"], "packing": packing,
              "float_dtype": float_dtype, "layout_sha256": _layout_hash(layout),
              "tokenizer_bytes": len(tok_bytes), "tinylm": __version__}
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    body = PREAMBLE.pack(MAGIC, VERSION, len(head)) + head + b"".join(chunks) + tok_bytes
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(out.name + ".tmp")
    temp.write_bytes(body + hashlib.sha256(body).digest())
    temp.replace(out)
    return out


# --------------------------------------------------------------------------- reading

class PackedTernaryLinear(nn.Module):
    """A BitLinear's function from int8 trits and per-row scales (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, parts: tuple[int, ...],
                 act_quant: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.parts, self.act_quant = tuple(parts), act_quant
        self.register_buffer("trits", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("row_scale", torch.ones(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.trits.to(x.dtype)  # (out, in), lives for this one product only
        if self.act_quant:
            ints, step = quantize_activations(x)  # integers in [-128, 127], step (..., 1)
            return F.linear(ints, weight) * (step * self.row_scale)
        return F.linear(x, weight) * self.row_scale


class PackedBitNet(BitNet):
    """BitNet running from packed weights: every BitLinear a PackedTernaryLinear. Build it
    with `load_packed`; inference only (nothing here has a gradient)."""

    def __init__(self, config):
        super().__init__(config)
        for block in self.layers:
            for path, parts in bit_linears(config).items():
                owner_name, attr = path.split(".")
                owner = getattr(block, owner_name)
                old = getattr(owner, attr)
                setattr(owner, attr, PackedTernaryLinear(old.in_features, old.out_features,
                                                         parts, config.act_quant))


def _fail(path, why: str):
    raise TinyLMError(f"{path}: not a usable packed bitnet file ({why})")


def _read_header(blob: bytes, path) -> tuple[dict, int]:
    if len(blob) < PREAMBLE.size + DIGEST:
        _fail(path, f"only {len(blob)} bytes")
    magic, version, head_len = PREAMBLE.unpack_from(blob)
    if magic != MAGIC:
        _fail(path, "wrong magic bytes")
    if version != VERSION:
        _fail(path, f"format version {version}; this tinylm reads version {VERSION}")
    if hashlib.sha256(blob[:-DIGEST]).digest() != blob[-DIGEST:]:
        _fail(path, "sha256 mismatch: the file is damaged or truncated")
    start = PREAMBLE.size
    try:
        header = json.loads(blob[start:start + head_len].decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        _fail(path, f"bad header: {err}")
    if not isinstance(header, dict) or header.get("format") != "tinylm-bitnet-packed":
        _fail(path, "the header is not a tinylm-bitnet-packed header")
    return header, start + head_len


def load_packed(path: str | Path) -> PackedBitNet:
    """The model of a packed file, in eval mode, with its tokenizer as `model.tokenizer`."""
    from tinylm.models import get_family
    from tinylm.models.common import rope_tables
    from tinylm.tokenizers import tokenizer_from_dict

    path = Path(path)
    if not path.is_file():
        raise TinyLMError(f"packed file not found: {path}")
    blob = path.read_bytes()
    header, offset = _read_header(blob, path)
    try:
        packing, float_name = header["packing"], header["float_dtype"]
        config = get_family(header["family"]).config_from(header["model_config"])
        tok_len = int(header["tokenizer_bytes"])
    except (KeyError, TypeError, ValueError) as err:
        _fail(path, f"bad header field: {err}")
    if packing not in PER_BYTE or float_name not in FLOAT_DTYPES:
        _fail(path, f"unknown packing {packing!r} or float dtype {float_name!r}")
    with torch.device("meta"):  # structure only: no fp32 weights are ever allocated
        model = PackedBitNet(config)
    layout = _layout(model)
    if _layout_hash(layout) != header.get("layout_sha256"):
        _fail(path, "its tensor layout does not match the model config")
    expected = offset + payload_size(layout, packing, float_name) + tok_len + DIGEST
    if len(blob) != expected:
        _fail(path, f"{len(blob)} bytes where its header implies {expected}")
    state = _read_tensors(memoryview(blob), offset, layout, packing, float_name)
    model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    cos, sin = rope_tables(config.head_dim, config.context_len, config.rope_base)
    model.rope_cos.copy_(cos)
    model.rope_sin.copy_(sin)
    tok_start = len(blob) - DIGEST - tok_len
    try:
        model.tokenizer = tokenizer_from_dict(json.loads(zlib.decompress(
            blob[tok_start:len(blob) - DIGEST])), where=str(path))
    except (zlib.error, ValueError, UnicodeDecodeError) as err:
        _fail(path, f"bad tokenizer section: {err}")
    return model.eval().requires_grad_(False)


def _read_tensors(view, offset: int, layout, packing: str, float_name: str) -> dict:
    dtype = FLOAT_DTYPES[float_name]
    state = {}
    for name, shape, parts in layout:
        count = math.prod(shape)
        if parts:
            scales = torch.frombuffer(bytearray(view[offset:offset + 4 * len(parts)]),
                                      dtype=torch.float32)
            offset += 4 * len(parts)
            size = packed_size(count, packing)
            data = torch.frombuffer(bytearray(view[offset:offset + size]), dtype=torch.uint8)
            offset += size
            base = name[:-len(".weight")]
            state[f"{base}.trits"] = unpack_trits(data, count, packing).view(shape)
            state[f"{base}.row_scale"] = scales.repeat_interleave(torch.tensor(parts))
        else:
            size = count * dtype.itemsize
            raw = torch.frombuffer(bytearray(view[offset:offset + size]), dtype=dtype) \
                if size else torch.empty(0, dtype=dtype)
            state[name] = raw.float().view(shape)  # fp16 embeddings widen: they are fp
            offset += size
    return state
