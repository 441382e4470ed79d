"""Exported part: weights loader, sampler, generation loop and command line.

The sampler and the loop restate `tinylm.infer.sampling.sample_next` and
`tinylm.infer.generate._generate_batch` for one prompt, step for step: the same seeded
`torch.Generator`, one `torch.multinomial` draw per token, the repetition penalty over every id
seen (the whole prompt included), the prompt cut to its last context - 1 ids, and, when the
context is full, the cache rebuilt from the last context // 2 ids. Any change there must be
made here too; the export tests compare the two outputs token for token.
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

# Stand-ins for what the generated file defines elsewhere (the family and tokenizer parts and
# the data section); they let this module be imported and linted on its own.
Model = ModelConfig = Tokenizer = None
MODEL_CONFIG: dict = {}
TOKENIZER: dict = {}
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
    checked against the recorded sha256), or those at `path` (a .safetensors file or a tinylm
    checkpoint folder)."""
    if path is None and WEIGHTS is not None:
        blob = base64.b64decode(WEIGHTS)
    else:
        own = path is None
        if own:
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS_FILE)
        if os.path.isdir(path):
            path = os.path.join(path, "model.safetensors")
        if not os.path.isfile(path):
            raise ValueError(f"weights file not found: {path}")
        with open(path, "rb") as f:
            blob = f.read()
        if not own:
            return blob
    if hashlib.sha256(blob).hexdigest() != WEIGHTS_SHA256:
        raise ValueError("the weights do not match the sha256 this file records: corrupt or "
                         "replaced")
    return blob


def load_model(weights=None, device="cpu"):
    """(model, config), the model in eval mode and carrying its tokenizer (`model.tokenizer`).

    `weights`: None for the weights exported with this file, or a path to a .safetensors file
    (or tinylm checkpoint folder) of the same model shape.
    """
    config = ModelConfig(**MODEL_CONFIG)
    model = Model(config)
    model.load_state_dict(read_safetensors(weights_blob(weights)), strict=True)
    model.tokenizer = Tokenizer(TOKENIZER)
    return model.to(device).eval(), config


# --------------------------------------------------------------------------- sampling

def check_settings(temperature, top_k, top_p, repetition_penalty):
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty}")


def sample_next(logits, seen, generator, temperature, top_k, top_p, repetition_penalty):
    """logits (1, V) -> next id (1,). Repetition penalty on seen ids (positive logits divided,
    negative multiplied), temperature (0: greedy), top-k, top-p, one multinomial draw."""
    logits = logits.float()
    if repetition_penalty != 1.0:
        penalised = torch.where(logits > 0, logits / repetition_penalty,
                                logits * repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) > top_p  # keep the first over p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --------------------------------------------------------------------------- generation

@torch.inference_mode()
def generate_ids(model, prompt_ids, max_new_tokens=100, temperature=0.8, top_k=0, top_p=1.0,
                 repetition_penalty=1.0, seed=0, eos_id=None, on_token=None) -> list[int]:
    """Continue a list of ids by up to max_new_tokens ids (EOS stops, and is not returned)."""
    check_settings(temperature, top_k, top_p, repetition_penalty)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not prompt_ids:
        raise ValueError("empty prompt: give at least one token")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else seed)
    context, vocab = model.config.context_len, model.config.vocab_size
    history = torch.tensor([prompt_ids], device=device)  # (1, T): every id so far
    seen = torch.zeros(1, vocab, dtype=torch.bool, device=device)
    seen.scatter_(1, history, True)
    window = history[:, -(context - 1):] if history.shape[1] >= context else history
    cache = model.new_cache(1, context)
    logits = model(window, cache, 0)[:, -1]
    pos = window.shape[1]
    out = []
    for _ in range(max_new_tokens):
        next_ids = sample_next(logits, seen, generator, temperature, top_k, top_p,
                               repetition_penalty)  # (1,)
        token = int(next_ids[0])
        if eos_id is not None and token == eos_id:
            break
        out.append(token)
        if on_token is not None:
            on_token(token)
        seen[torch.arange(1, device=device), next_ids] = True
        history = torch.cat([history, next_ids[:, None]], dim=1)
        if pos == context:  # the context is full: keep the newest half, rebuild the cache
            keep = history[:, -(context // 2):]
            cache = model.new_cache(1, context)
            logits = model(keep, cache, 0)[:, -1]
            pos = keep.shape[1]
        else:
            logits = model(next_ids[:, None], cache, pos)[:, -1]
            pos += 1
    return out


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
    parser.add_argument("-n", type=int, default=200, help="new tokens")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
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
