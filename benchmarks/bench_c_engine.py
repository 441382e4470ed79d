"""Batch-1 greedy generation of the C engine (`tinylm export c`) against transformers and
tinylm's PyTorch path, Glint-1.3 shape, on ONE core.

    python benchmarks/bench_c_engine.py                 # 5 rounds, 128 new tokens, core 1
    python benchmarks/bench_c_engine.py --rounds 9 --core 0 --json out.json

The model: the `glint-1.3` preset (dim 128, 4 layers, 4 heads, SwiGLU 384, context 256, tied)
with a byte-level BPE-500 tokenizer trained on TinyStories, random weights (speed does not
depend on them). The same weights run on every side: the checkpoint is exported with
`tinylm export c` and copied into `LlamaForCausalLM` (bench_train_generate's mapping); the
script checks that transformers' logits match tinylm's and that every side's greedy ids are
the same before it times anything.

What is timed: processor time (one thread, so the time the core spent on it; other load on a
shared machine can only add to wall time) of one prompt's prefill plus N new tokens, greedy:
- run.c compiled `-O2 -std=c99` (the portable build), `-O3 -march=native -std=c99`, and that
  plus `-ffp-contract=fast` (ISO C mode keeps GCC from fusing a * b + c into one FMA; this lets
  it, changing the last bits of the logits, not the greedy ids here), timed by the engine itself (`--bench`: from before prefill to the last token, excluding
  process start and loading the model file);
- tinylm's PyTorch path: `generate_ids`, what `tinylm generate` runs (its FastDecoder);
- transformers: `model.generate(do_sample=False)` with SDPA attention.
torch runs one intra-op thread; the whole process (and the engines it starts) is pinned to
one core with sched_setaffinity, as `taskset -c CORE` would. Each side runs --rounds times,
alternating; the table shows the fastest round and the median, ratios from the fastest.

The compute limit: FLOPs per new token (2 x multiply-adds of every matrix, plus q.k and p.v
over the cached positions, averaged over the run) times tok/s, against the core's fp32 peak
measured by a small C loop of independent multiply-adds (-O3 -march=native
-ffp-contract=fast, so the compiler emits vector FMAs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PROMPT = "Once upon a time, there was a little girl named Lily. She"
PEAK_SOURCE = r"""
#include <stdio.h>
#include <time.h>
#define LANES 80 /* ten 8-wide vectors of independent chains: enough to fill two FMA pipes */
int main(void) {
    float acc[LANES], m = 0.999999f, a = 1e-7f;
    for (int j = 0; j < LANES; j++) acc[j] = (float)j;
    long iters = 20000000;
    clock_t t = clock();
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < LANES; j++) acc[j] = acc[j] * m + a;
    double s = (double)(clock() - t) / CLOCKS_PER_SEC;
    float sum = 0;
    for (int j = 0; j < LANES; j++) sum += acc[j];
    printf("%.3f %g\n", 2.0 * LANES * iters / s / 1e9, sum);
    return 0;
}
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--core", type=int, default=1, help="the CPU core to pin to")
    p.add_argument("--cc", default=shutil.which("cc") or "gcc")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def build_checkpoint(root: Path):
    from tinylm.models import get_family
    from tinylm.tokenizers import BPETokenizer
    from tinylm.train.checkpoint import save_checkpoint

    text = (Path(__file__).resolve().parents[1] / "../shared/data/tinystories/"
            "TinyStories-train-prefix.txt").resolve().read_text(encoding="utf-8")[:300_000]
    tokenizer = BPETokenizer.train([text], 500)
    record = get_family("llama")
    config = {**record.presets["glint-1.3"].model, "vocab_size": tokenizer.vocab_size}
    torch.manual_seed(0)
    model = record.build(config)
    return save_checkpoint(root / "ckpt", family="llama", model_config=config,
                           model_state=model.state_dict(), tokenizer=tokenizer), tokenizer


def compile_engine(cc: str, folder: Path, flags: list[str], name: str) -> Path:
    out = folder / name
    subprocess.run([cc, *flags, "-std=c99", "-o", str(out), str(folder / "run.c"), "-lm"],
                   check=True)
    return out


def time_engine(binary: Path, folder: Path, n: int) -> tuple[float, list[int]]:
    args = [str(binary), str(folder / "model.bin"), str(folder / "tokenizer.bin"), "--prompt",
            PROMPT, "-n", str(n), "--temperature", "0", "--bench", "--ids"]
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    seconds = float(proc.stderr.split(" in ")[1].split(" s")[0])
    return seconds, [int(t) for t in proc.stdout.split()]


def measure_peak(cc: str, root: Path) -> float:
    source = root / "peak.c"
    source.write_text(PEAK_SOURCE)
    binary = root / "peak"
    subprocess.run([cc, "-O3", "-march=native", "-ffp-contract=fast", "-std=c99", "-o",
                    str(binary), str(source)], check=True)
    return max(float(subprocess.run([str(binary)], capture_output=True, text=True,
                                    check=True).stdout.split()[0]) for _ in range(3))


def hf_peer(model):
    from bench_train_generate import to_hf_state_dict
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM

    c = model.config
    peer = LlamaForCausalLM(HFLlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.ffn_hidden,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, max_position_embeddings=c.context_len,
        tie_word_embeddings=c.tie_embeddings, rms_norm_eps=c.norm_eps, rope_theta=c.rope_base,
        attn_implementation="sdpa"))
    missing, unexpected = peer.load_state_dict(to_hf_state_dict(model), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise SystemExit(f"weight copy failed: missing {missing}, unexpected {unexpected}")
    peer.generation_config.eos_token_id = None  # never stop early
    peer.generation_config.pad_token_id = 0
    return peer.eval()


def main(argv=None) -> dict:
    args = parse_args(argv)
    from tinylm.export.c_engine import export_c, flops_per_token, load_for_export
    from tinylm.infer.generate import generate_ids
    from tinylm.infer.sampling import SamplingConfig

    os.sched_setaffinity(0, {args.core})  # this process and every engine it starts
    torch.set_num_threads(1)
    print(f"load average at start: {os.getloadavg()}; pinned to core {args.core}")
    root = Path(tempfile.mkdtemp(prefix="bench-c-engine-"))
    ckpt, tokenizer = build_checkpoint(root)
    export_c(ckpt, root / "c")
    _, model, spec = load_for_export(ckpt)
    peer = hf_peer(model)
    ids = tokenizer.encode(PROMPT)
    n = args.new_tokens
    with torch.no_grad():
        batch = torch.tensor([ids])
        logit_diff = (model(batch) - peer(input_ids=batch).logits).abs().max().item()
    if logit_diff > 1e-4:
        raise SystemExit(f"tinylm and transformers logits differ by {logit_diff:.2e}")
    engines = {"run.c -O2": compile_engine(args.cc, root / "c", ["-O2"], "run-O2"),
               "run.c -O3 -march=native": compile_engine(args.cc, root / "c",
                                                         ["-O3", "-march=native"], "run-O3"),
               "run.c ... -ffp-contract=fast": compile_engine(
                   args.cc, root / "c", ["-O3", "-march=native", "-ffp-contract=fast"],
                   "run-O3-fma")}

    def torch_side(run):
        def timed():
            start = time.process_time()
            out = run()
            return time.process_time() - start, out
        return timed

    @torch.inference_mode()
    def run_peer():
        prompt = torch.tensor([ids])
        out = peer.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                            max_new_tokens=n, min_new_tokens=n, use_cache=True)
        return out[0, len(ids):].tolist()

    sides = {name: (lambda b=binary: time_engine(b, root / "c", n))
             for name, binary in engines.items()}
    sides["tinylm PyTorch"] = torch_side(
        lambda: generate_ids(model, [ids], n, SamplingConfig(temperature=0))[0])
    sides["transformers"] = torch_side(run_peer)
    outputs = {name: run()[1] for name, run in sides.items()}  # warm-up and the ids
    reference = outputs["tinylm PyTorch"]
    same = {name: out == reference for name, out in outputs.items()}
    if not same["run.c -O2"]:
        raise SystemExit("run.c's greedy ids differ from tinylm's")
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, run in sides.items():
            times[name].append(run()[0])
    peak = measure_peak(args.cc, root)
    mean_pos = len(ids) + (n - 1) / 2
    flops = flops_per_token(spec, int(mean_pos))
    best = {name: n / min(t) for name, t in times.items()}
    print(f"load average at end: {os.getloadavg()}")
    print(f"\nGlint-1.3 shape, batch 1, {len(ids)}-id prompt + {n} new tokens, greedy, "
          f"one core; tok/s from processor time, best of {args.rounds} (median)")
    print(f"same greedy ids as tinylm: {same}; transformers logits within {logit_diff:.1e}")
    print(f"{'side':26s} {'tok/s':>9s} {'median':>9s} {'x transformers':>15s} "
          f"{'x tinylm':>9s} {'of peak':>8s}")
    for name, t in times.items():
        rate, median = best[name], n / statistics.median(t)
        print(f"{name:26s} {rate:9.0f} {median:9.0f} {rate / best['transformers']:15.1f} "
              f"{rate / best['tinylm PyTorch']:9.1f} {rate * flops / (peak * 1e9):8.1%}")
    print(f"\nFLOPs per new token (mean position {mean_pos:.0f}): {flops / 1e6:.2f} M; "
          f"measured fp32 peak of the core: {peak:.1f} GFLOP/s (C FMA loop), i.e. "
          f"{peak * 1e9 / flops:,.0f} tok/s at the compute limit")
    result = {"tok_s_best": best, "times": times, "peak_gflops": peak, "flops_per_token": flops,
              "same_ids": same, "logit_diff": logit_diff, "load": os.getloadavg()}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
