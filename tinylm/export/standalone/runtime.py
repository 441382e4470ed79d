"""Exported part: weights loader, generation for one prompt, and the command line.

The sampler and the decode loop are not here: the exported file carries tinylm's own
(`tinylm.infer.sampling` and `tinylm.infer.generate.decode_batch`, their export regions), and
`generate_ids` below only wraps them for one prompt, with the same seeded generator as
`tinylm generate`, so both write the same ids.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import hashlib
import json
import os
import sys

import torch

# Stand-ins for what the generated file defines elsewhere (the model, tokenizer and engine
# sections and the data section); they let this module be imported and linted on its own.
Model = ModelConfig = Tokenizer = SamplingConfig = decode_batch = decode_threads = None
model_device = None
MODEL_CONFIG: dict = {}
TOKENIZER: dict = {}
TOKENIZER_META: dict = {}
WEIGHTS: str | None = None
WEIGHTS_FILE = ""
WEIGHTS_SHA256 = ""
DEFAULT_PROMPT = "Once upon a time"

# %% export

# --------------------------------------------------------------------------- weights

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(blob: bytes) -> dict:
    """Tensors of a safetensors file: an 8-byte little-endian header size, a JSON header of
    {name: {dtype, shape, data_offsets}}, then the raw little-endian data."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size])
    data = bytearray(blob[8 + size:])  # writable, as torch.frombuffer wants
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, (start, end) = DTYPES[info["dtype"]], info["data_offsets"]
        count = (end - start) // dtype.itemsize
        flat = (torch.frombuffer(data, dtype=dtype, count=count, offset=start) if count
                else torch.empty(0, dtype=dtype))
        tensors[name] = flat.reshape(info["shape"])
    return tensors


def weights_blob(path=None) -> bytes:
    """The safetensors bytes: this file's own (embedded, or the side file written with it,
    checked against the recorded sha256), or those at `path`: a .safetensors file, or a tinylm
    checkpoint folder, whose weights are checked against the sha256 its meta.json records and
    whose tokenizer must be this file's."""
    if path is None and WEIGHTS is not None:
        blob = base64.b64decode(WEIGHTS)
    else:
        own = path is None
        if own:
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS_FILE)
        expected = WEIGHTS_SHA256 if own else _checkpoint_sha256(path)
        if os.path.isdir(path):
            path = os.path.join(path, "model.safetensors")
        if not os.path.isfile(path):
            raise ValueError(f"weights file not found: {path}")
        with open(path, "rb") as f:
            blob = f.read()
        if expected is None:
            return blob
        if hashlib.sha256(blob).hexdigest() != expected:
            raise ValueError(f"{path}: the weights do not match the sha256 recorded for them: "
                             f"corrupt or replaced")
        return blob
    if hashlib.sha256(blob).hexdigest() != WEIGHTS_SHA256:
        raise ValueError("the weights do not match the sha256 this file records: corrupt or "
                         "replaced")
    return blob


def _checkpoint_sha256(path):
    """For a tinylm checkpoint folder: the weights' sha256 from its meta.json, after checking
    that its tokenizer is this file's. None for a bare .safetensors file."""
    meta_path = os.path.join(path, "meta.json")
    if not os.path.isdir(path) or not os.path.isfile(meta_path):
        return None
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        recorded, tokenizer = meta["files"]["model.safetensors"], meta["tokenizer"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{meta_path}: not a readable tinylm checkpoint") from None
    if tokenizer != TOKENIZER_META:
        raise ValueError(f"{path}: its tokenizer ({tokenizer.get('kind')}, vocab "
                         f"{tokenizer.get('vocab_size')}) is not this file's "
                         f"({TOKENIZER_META.get('kind')}, vocab "
                         f"{TOKENIZER_META.get('vocab_size')})")
    return recorded


def load_model(weights=None, device="cpu"):
    """(model, config), the model in eval mode and carrying its tokenizer (`model.tokenizer`).

    `weights`: None for the weights exported with this file, or a path to a .safetensors file
    (or tinylm checkpoint folder) of the same model shape.
    """
    config = ModelConfig(**MODEL_CONFIG)
    model = Model(config)
    state = read_safetensors(weights_blob(weights))
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    got = {name: tuple(t.shape) for name, t in state.items()}
    if got != expected:
        odd = sorted(set(got) ^ set(expected)) or [n for n in expected if got[n] != expected[n]]
        raise ValueError(f"these weights do not fit this file's model (first difference: "
                         f"{odd[0]}); export their checkpoint instead")
    model.load_state_dict(state, strict=True)
    model.tokenizer = Tokenizer(TOKENIZER)
    return model.to(device).eval(), config


# --------------------------------------------------------------------------- generation

@torch.inference_mode()
def generate_ids(model, prompt_ids, max_new_tokens=100, temperature=0.8, top_k=0, top_p=1.0,
                 repetition_penalty=1.0, seed=0, eos_id=None, on_token=None) -> list[int]:
    """Continue a list of ids by up to max_new_tokens ids (EOS stops, and is not returned);
    `on_token(id)` gets each id as it comes."""
    sampling = SamplingConfig(temperature, top_k, top_p, repetition_penalty)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not prompt_ids:
        raise ValueError("empty prompt: give at least one token")
    generator = torch.Generator(device=model_device(model))
    generator.manual_seed(0 if seed is None else seed)
    stream = None if on_token is None else (lambda row, token: on_token(token))
    with decode_threads(model, 1):
        return decode_batch(model, [list(prompt_ids)], max_new_tokens, sampling, generator,
                            eos_id, stream)[0]


def generate(model, prompt, temperature=0.8, top_k=0, repetition_penalty=1.0, seed=0,
             max_new_tokens=100, top_p=1.0, stream=None) -> str:
    """The continuation of `prompt` (str or bytes) as text; `stream(text)` gets it piece by
    piece as it comes, never splitting a UTF-8 character."""
    tokenizer = model.tokenizer
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("empty prompt: give at least one character of text")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = []

    def on_token(token):
        text = decoder.decode(tokenizer.decode_bytes([token]))
        if text and stream is not None:
            stream(text)
        pieces.append(text)

    generate_ids(model, ids, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                 seed, tokenizer.eos_id, on_token)
    pieces.append(decoder.decode(b"", final=True))
    if pieces[-1] and stream is not None:
        stream(pieces[-1])
    return "".join(pieces)


# --------------------------------------------------------------------------- command line

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Generate text with the model in this file "
                                     "(same settings and output as `tinylm generate`).")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    defaults = SamplingConfig()  # tinylm's own defaults, as `tinylm generate` has them
    parser.add_argument("-n", type=int, default=200, help="new tokens")
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="other weights of the same shape (.safetensors file "
                        "or tinylm checkpoint folder); default: this file's own")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        if not args.prompt:
            raise ValueError("empty prompt: pass --prompt TEXT")
        try:
            args.prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("prompt is not valid UTF-8 text") from None
        model, _ = load_model(args.weights, args.device)
        sys.stdout.write(args.prompt)
        generate(model, args.prompt, args.temperature, args.top_k, args.repetition_penalty,
                 args.seed, args.n, args.top_p,
                 stream=lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        sys.stdout.write("\n")
    except ValueError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0
