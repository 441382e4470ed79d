"""BLT against a bytes-only llama of matched training FLOPs per byte, same bytes, same wall
clock, on this CPU.

    python benchmarks/bench_blt.py [--budget 150] [--threads 1] [--eval-bytes 8192]

Both models read the same TinyStories training windows (tinylm's deterministic sampler: the
batch of step s is the same for both, 16 x 256 bytes) and train for `--budget` seconds of
wall clock each; the BLT's budget includes its first stage (training the entropy patcher),
since a bytes-only model needs none. The llama's shape is the candidate whose estimated
training FLOPs per byte are nearest the BLT's (`flops_per_byte`: 6 x the matmul parameters a
byte passes through, the latent's divided by the mean patch length, plus 2 x the frozen
patcher's forward; attention scores and embedding lookups left out for both). The learning
rate warms up for 30 steps and then follows a cosine over the *time* budget.

Prints, for both: FLOPs per byte, steps and training bytes/s, BPB on the first
`--eval-bytes` bytes of TinyStories validation and of WikiText-2 test (tinylm's scoring core,
rolling windows as `tinylm eval` scores), and generation bytes/s (200 bytes sampled after
"Once upon a time", the engine `tinylm generate` runs). The machine is shared; run it with
`--threads 1`, and read the figures as relative.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from tinylm.data.pack import load_or_build
from tinylm.data.sampler import train_batch
from tinylm.data.sources import resolve_data_dir
from tinylm.eval.lm import LMScorer
from tinylm.infer.generate import generate_ids
from tinylm.infer.sampling import SamplingConfig
from tinylm.models import get_family
from tinylm.tokenizers import ByteTokenizer
from tinylm.train.config import TrainConfig
from tinylm.train.optim import build_optimizer

SEQ, BATCH, SEED, WARMUP = 256, 16, 1337, 30


def matmul_params(module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def flops_per_byte(model, patch_len: float) -> float:
    """Training FLOPs per byte, estimated (see the module docstring)."""
    if model.family == "llama":
        return 6 * (matmul_params(model) + model.tok_emb.weight.numel())  # + the tied head
    local = sum(matmul_params(m) for m in (model.encoder, model.decoder, model.encoder_cross,
                                           model.decoder_cross))
    latent = matmul_params(model.latent) + matmul_params(model.to_latent) \
        + matmul_params(model.from_latent)
    head = model.byte_emb.weight.numel()
    return 6 * (local + head + latent / patch_len) + 2 * (matmul_params(model.patcher)
                                                         + model.patcher.tok_emb.weight.numel())


def blt_model(patcher_steps: int, train_tokens, log):
    record = get_family("blt")
    torch.manual_seed(SEED)
    model = record.build({**record.presets["blt-tiny"].model, "vocab_size": 257,
                          "patcher_steps": patcher_steps})
    record.prepare_training(model, train_tokens, TrainConfig(seed=SEED), SEQ, log)
    return model


def matched_llama(target: float):
    """The llama (byte tokenizer) whose FLOPs per byte are nearest `target`."""
    record = get_family("llama")
    best = None
    for dim in (64, 96, 128, 160, 192):
        for layers in (2, 3, 4, 6):
            config = {"vocab_size": 257, "dim": dim, "n_layers": layers, "n_heads": 4,
                      "n_kv_heads": 4, "ffn_hidden": 3 * dim, "context_len": SEQ}
            flops = flops_per_byte(record.build(config), 1.0)
            if best is None or abs(math.log(flops / target)) < abs(math.log(best[0] / target)):
                best = (flops, config)
    torch.manual_seed(SEED)
    return record.build(best[1])


def train_for(model, train_tokens, budget: float, spent: float = 0.0) -> dict:
    """Train until `budget` seconds (counting `spent` already) are used; steps and bytes/s."""
    optimizer = build_optimizer(model, "adamw", 3e-3, 0.1, (0.9, 0.95), 1e-8, "cpu")
    start, step, last_loss = time.perf_counter(), 0, float("nan")
    model.train()
    while (elapsed := spent + time.perf_counter() - start) < budget:
        progress = elapsed / budget
        lr = 3e-3 * ((step + 1) / WARMUP if step < WARMUP
                     else 0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = train_batch(train_tokens, SEQ, BATCH, SEED, step)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        last_loss = loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
    seconds = time.perf_counter() - start
    model.eval()
    return {"steps": step, "train_loss": last_loss, "train_bytes_per_s":
            step * BATCH * SEQ / seconds, "train_seconds": seconds}


def bpb(model, text: bytes) -> float:
    scorer = LMScorer(model, ByteTokenizer())
    logprob = scorer.rolling_tokens([list(text)])[0]
    return -float(logprob) / math.log(2) / len(text)


def generation_speed(model, n: int = 200) -> float:
    prompt = list(b"Once upon a time")
    start = time.perf_counter()
    out = generate_ids(model, [prompt], n, SamplingConfig(temperature=0.8), seed=0)
    return len(out[0]) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=150.0, help="seconds of training per model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-bytes", type=int, default=8192)
    p.add_argument("--patcher-steps", type=int, default=60)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = resolve_data_dir()
    tokenizer = ByteTokenizer()
    train_tokens = load_or_build("tinystories", "train", tokenizer, data).tokens
    val_tokens = load_or_build("tinystories", "val", tokenizer, data).tokens
    stories = bytes(int(t) for t in val_tokens[:args.eval_bytes * 2] if t < 256)[
        :args.eval_bytes]
    wiki = (data / "wikitext-2" / "wiki.test.raw").read_bytes()[:args.eval_bytes]

    rows = {}
    start = time.perf_counter()
    blt = blt_model(args.patcher_steps, train_tokens, print)
    patcher_seconds = time.perf_counter() - start
    from tinylm.models.blt import patcher_summary

    patch_len = patcher_summary(blt)["sample_text"]["mean"]
    target = flops_per_byte(blt, patch_len)
    llama = matched_llama(target)
    for name, model, spent in (("blt-tiny", blt, patcher_seconds), ("llama bytes", llama, 0.0)):
        print(f"training {name} for {args.budget:.0f} s ...", flush=True)
        row = train_for(model, train_tokens, args.budget, spent)
        with torch.no_grad():
            row["bpb_tinystories"] = bpb(model, stories)
            row["bpb_wikitext2"] = bpb(model, wiki)
        row["gen_bytes_per_s"] = generation_speed(model)
        row["flops_per_byte"] = flops_per_byte(model, patch_len)
        row["params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows[name] = row
    c = llama.config
    print(f"\nBLT patcher first stage: {patcher_seconds:.1f} s (inside the BLT's budget); "
          f"mean patch {patch_len:.2f} bytes on the sample text; llama: dim {c.dim}, "
          f"{c.n_layers} layers, SwiGLU {c.ffn_hidden}; threads {args.threads}; "
          f"eval on the first {args.eval_bytes:,} bytes of each set")
    header = (f"{'model':12s} {'trained':>9s} {'GFLOP/KB':>9s} {'steps':>6s} {'train B/s':>10s} "
              f"{'BPB TS val':>11s} {'BPB WT2 test':>13s} {'gen B/s':>8s}")
    print(header)
    for name, r in rows.items():
        print(f"{name:12s} {r['params']:9,d} {r['flops_per_byte'] * 1024 / 1e9:9.2f} "
              f"{r['steps']:6d} {r['train_bytes_per_s']:10,.0f} {r['bpb_tinystories']:11.3f} "
              f"{r['bpb_wikitext2']:13.3f} {r['gen_bytes_per_s']:8.1f}")


if __name__ == "__main__":
    main()
