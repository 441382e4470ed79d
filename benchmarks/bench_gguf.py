"""llama.cpp (through llama-cpp-python) against tinylm on the same `tinylm export gguf` file.

    pip install gguf llama-cpp-python      # llama.cpp is built from source: minutes on 2 cores
    python benchmarks/bench_gguf.py [--checkpoint CKPT] [-n 200] [--threads 1] [--repeats 3]

What it does:
1. Takes a llama checkpoint, or (by default) makes one: the Glint-1.3 shape (dim 128, 4 layers,
   byte-level BPE 500, context 256) trained `--train-steps` AdamW steps in-process on
   TinyStories, so greedy text is a trained model's and not a near-tie of random logits.
2. Exports it with `tinylm export gguf` (f32) and loads the file in llama.cpp.
3. Checks the two are one model: the prompt's token ids (llama.cpp's tokenizer against
   tinylm's), and the logits over the prompt (max |difference|).
4. Greedy decoding at batch 1, `-n` new tokens (no stop at EOS, inside the context so tinylm
   never rebuilds its cache): the ids of both, where they first differ, and tok/s (median of
   `--repeats`, the two interleaved; each timed over the prompt's prefill plus the n steps,
   model loading excluded). Both on `--threads` CPU threads.
The figures go to stdout (and `--json`). Timings depend on the machine's load: say so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tinylm.export.gguf import export_gguf
from tinylm.infer.generate import LoadedModel, generate_ids
from tinylm.infer.sampling import SamplingConfig

PROMPT = "Once upon a time, there was a little"
F32 = 0  # GGML_TYPE_F32, for llama.cpp's KV cache: the same arithmetic as tinylm's f32 cache


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a llama checkpoint (default: train a Glint-1.3 shape)")
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--data-dir", default=None)
    p.add_argument("-n", type=int, default=200, help="new tokens per run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--json", help="also write the results to this file")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- the checkpoint

def glint_checkpoint(folder: Path, steps: int, data_dir) -> Path:
    from tinylm.data.sources import resolve_data_dir
    from tinylm.models import build_model
    from tinylm.tokenizers import BPETokenizer
    from tinylm.train.checkpoint import save_checkpoint

    text = (resolve_data_dir(data_dir) / "tinystories" / "TinyStories-train-prefix.txt") \
        .read_text(encoding="utf-8")[:2_000_000]
    tokenizer = BPETokenizer.train([text[:500_000]], 500)
    config = {"vocab_size": 500, "dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4,
              "ffn_hidden": 384, "context_len": 256, "tie_embeddings": True}
    torch.manual_seed(0)
    model = build_model("llama", config)
    ids = torch.tensor(tokenizer.encode(text[500_000:]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        starts = torch.randint(0, len(ids) - 257, (16,), generator=generator)
        batch = torch.stack([ids[s:s + 257] for s in starts])
        loss = torch.nn.functional.cross_entropy(model(batch[:, :-1]).flatten(0, 1),
                                                 batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"trained the Glint-1.3 shape {steps} steps (16 x 256 tokens), last loss "
          f"{loss.item():.3f}")
    return save_checkpoint(folder / "glint", family="llama", model_config=config,
                           model_state=model.state_dict(), tokenizer=tokenizer,
                           extra_meta={"step": steps, "data": "tinystories"})


# --------------------------------------------------------------------------- the two runs

def tinylm_greedy(ours: LoadedModel, prompt_ids: list[int], n: int) -> tuple[list[int], float]:
    """New ids and seconds (prefill + n steps), one row, greedy, no stop at EOS."""
    start = time.perf_counter()
    new = generate_ids(ours.model, [prompt_ids], n, SamplingConfig(temperature=0.0))[0]
    return new, time.perf_counter() - start


def llama_cpp_greedy(llm, prompt_ids: list[int], n: int) -> tuple[list[int], float]:
    llm.reset()
    new: list[int] = []
    start = time.perf_counter()
    for token in llm.generate(prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0,
                              repeat_penalty=1.0, reset=True):
        new.append(int(token))
        if len(new) == n:
            break
    return new, time.perf_counter() - start


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from llama_cpp import Llama
    except ImportError as err:
        print(f"llama-cpp-python is not installed ({err}); pip install llama-cpp-python")
        return 1
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else \
            glint_checkpoint(Path(tmp), args.train_steps, args.data_dir)
        gguf_path = export_gguf(ckpt, Path(tmp) / "model.gguf")["out"]
        ours = LoadedModel.from_checkpoint(ckpt)
        context = ours.model.config.context_len
        llm = Llama(model_path=str(gguf_path), n_ctx=context, n_batch=context,
                    n_threads=args.threads, n_threads_batch=args.threads, logits_all=True,
                    type_k=F32, type_v=F32, verbose=False)  # its default KV cache is f16
        prompt_ids = ours.tokenizer.encode(args.prompt)
        theirs_ids = llm.tokenize(args.prompt.encode("utf-8"), add_bos=False, special=False)
        n = min(args.n, context - len(prompt_ids))
        llm.reset()
        llm.eval(prompt_ids)
        with torch.no_grad():
            logits = ours.model(torch.tensor([prompt_ids]))[0]
        theirs_logits = torch.tensor(llm.scores[:len(prompt_ids)])
        logit_diff = float((logits - theirs_logits).abs().max())
        runs_ours, runs_theirs = [], []
        for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits both
            runs_ours.append(tinylm_greedy(ours, prompt_ids, n))
            runs_theirs.append(llama_cpp_greedy(llm, prompt_ids, n))
    ids_ours, ids_theirs = runs_ours[0][0], runs_theirs[0][0]
    tps_ours = n / statistics.median(t for _, t in runs_ours)
    tps_theirs = n / statistics.median(t for _, t in runs_theirs)
    result = {
        "checkpoint": str(args.checkpoint or "glint-1.3 shape, trained in-process"),
        "threads": args.threads, "new_tokens": n, "prompt": args.prompt,
        "prompt_ids_equal": prompt_ids == list(theirs_ids),
        "prompt_logits_max_abs_diff": logit_diff,
        "greedy_ids_equal": ids_ours == ids_theirs,
        "first_difference_at": first_difference(ids_ours, ids_theirs),
        "tinylm_tok_s": round(tps_ours, 1), "llama_cpp_tok_s": round(tps_theirs, 1),
        "llama_cpp_over_tinylm": round(tps_theirs / tps_ours, 2),
        "tinylm_text": ours.tokenizer.decode(ids_ours),
        "llama_cpp_text": ours.tokenizer.decode(ids_theirs)}
    for key, value in result.items():
        print(f"{key:28s} {value!r}" if isinstance(value, str) else f"{key:28s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
