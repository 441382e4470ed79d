"""Continuous thinking (COCONUT-style think_steps) on the ~1M looped model: does it pay?

    python benchmarks/bench_thinking.py [--steps 200] [--think 4] [--batch-size 8]
        [--seq-len 128] [--threads 0] [--equal-compute] [--out DIR]

The Glint Research blog claims its 1M model "gets 46% better loss with 4 thinking steps and 8
loops than with no thinking at all". This trains the `looped-1m` preset (983,424 parameters,
8 loops) twice on the same TinyStories tokens (the same BPE-500 tokenizer, the same seed, so
the same batches in the same order): once with think_steps=0 and once with think_steps=k, for
the same number of steps and tokens, and reports side by side:

- validation loss (nats per token, and bits per byte of text), on the same fixed held-out
  batches, at the end of each run;
- training throughput, two ways: the trainer's own tokens/s over each whole run (the runs go
  one after the other, so background load can differ between them), and a side-by-side figure
  that alternates one training step of each model on the same batch (median of `--pairs`), which
  is fair under the shared, noisy CPU;
- the learned think gates (how much of each thought enters the next pass; 0 at init);
- with `--equal-compute`, a third run: think_steps=0 for (k + 1) times the steps, which spends
  about the same compute as the thinking run (each thought is a full extra pass).

Everything else is the preset's training recipe (NAdamW, WSD, lr 1e-3). The default (200
steps of 8 x 128 tokens) takes about 5 to 10 minutes on 2 shared CPU cores, nearly all of it
in the thinking run (k + 1 passes per token); use `--steps`, `--seq-len` for longer runs.
Results go to `--out` (default: a temporary folder) as results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from tinylm.config import load_preset
from tinylm.data.pack import load_or_build
from tinylm.data.sampler import train_batch
from tinylm.models import build_model
from tinylm.train.checkpoint import load_checkpoint
from tinylm.train.loop import RunSpec, train
from tinylm.train.optim import build_optimizer
from tinylm.train.session import build_train_config, prepare_tokenizer

PRESET = "looped-1m"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    p.add_argument("--think", type=int, default=4, help="think_steps of the thinking run")
    p.add_argument("--loops", type=int, default=8, help="loops of the shared block")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--eval-batches", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = default")
    p.add_argument("--pairs", type=int, default=6, help="side-by-side step pairs to time")
    p.add_argument("--equal-compute", action="store_true",
                   help="also train think_steps=0 for (think + 1) x steps")
    p.add_argument("--data", default="tinystories")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="folder for the runs (default: a temp folder)")
    return p.parse_args()


def train_one(name: str, think: int, steps: int, args, tokenizer, out: Path) -> dict:
    preset = load_preset(PRESET)
    model_config = {**preset["model"], "vocab_size": tokenizer.vocab_size,
                    "think_steps": think, "loops": args.loops}
    spec = RunSpec("looped", model_config, args.data, args.data_dir, PRESET)
    config = build_train_config(preset, None, {
        "steps": steps, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "eval_every": 0, "ckpt_every": 0, "eval_batches": args.eval_batches,
        "log_every": max(1, steps // 20), "threads": args.threads})
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)  # train() expects the folder new_run makes
    print(f"--- {name}: think_steps={think}, {steps} steps", flush=True)
    start = time.perf_counter()
    last = train(spec, config, tokenizer, run_dir, progress=False)
    wall = time.perf_counter() - start
    gate = load_checkpoint(last).model_state.get("think_gate")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tok_per_s"] for r in records if "tok_per_s" in r]
    val = [r["val_loss"] for r in records if "val_loss" in r][-1]
    return {"name": name, "think_steps": think, "steps": steps,
            "tokens": steps * args.batch_size * args.seq_len, "val_loss": val,
            "train_tok_per_s": statistics.median(speeds[1:] or speeds), "wall_s": wall,
            "think_gate": None if gate is None else [round(g, 4) for g in gate.tolist()],
            "train_config": asdict(config)}


def side_by_side_speed(args, tokenizer, thinks: list[int]) -> dict[int, float]:
    """Tokens/s of one training step per model, alternated on the same batch (median)."""
    preset = load_preset(PRESET)
    tokens = load_or_build(args.data, "train", tokenizer, args.data_dir).tokens
    x, y = train_batch(tokens, args.seq_len, args.batch_size, 0, 0)
    setups = {}
    for think in thinks:
        torch.manual_seed(0)
        model = build_model("looped", {**preset["model"], "vocab_size": tokenizer.vocab_size,
                                       "think_steps": think, "loops": args.loops})
        setups[think] = (model, build_optimizer(model, "nadamw", 1e-3, 0.05, (0.9, 0.95), 1e-8,
                                                "cpu"))
    times: dict[int, list[float]] = {think: [] for think in thinks}
    for _ in range(args.pairs + 1):  # the first pair warms up and is dropped
        for think, (model, optimizer) in setups.items():
            start = time.perf_counter()
            logits = model(x)
            F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times[think].append(time.perf_counter() - start)
    return {think: x.numel() / statistics.median(t[1:]) for think, t in times.items()}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-thinking-"))
    out.mkdir(parents=True, exist_ok=True)
    preset = load_preset(PRESET)
    tokenizer = prepare_tokenizer(preset, args.data, args.data_dir, None, 50)
    val_meta = load_or_build(args.data, "val", tokenizer, args.data_dir).meta
    bytes_per_token = _bytes_per_token(args, tokenizer)

    runs = [train_one("think0", 0, args.steps, args, tokenizer, out),
            train_one(f"think{args.think}", args.think, args.steps, args, tokenizer, out)]
    if args.equal_compute:
        runs.append(train_one("think0-equal-compute", 0, args.steps * (args.think + 1), args,
                              tokenizer, out))
    speeds = side_by_side_speed(args, tokenizer, [0, args.think])
    for run in runs:
        run["side_by_side_tok_per_s"] = speeds[run["think_steps"]]
        run["val_bits_per_byte"] = run["val_loss"] / math.log(2) / bytes_per_token

    params = sum(p.numel() for p in build_model(
        "looped", {**preset["model"], "vocab_size": tokenizer.vocab_size}).parameters())
    print(f"\n{PRESET}: {params:,} parameters, {args.loops} loops, {args.data} "
          f"({tokenizer.kind}-{tokenizer.vocab_size}, {bytes_per_token:.3f} bytes/token), "
          f"batch {args.batch_size} x {args.seq_len}, validation on "
          f"{args.eval_batches * args.batch_size * args.seq_len:,} held-out tokens "
          f"(of {val_meta['tokens']:,})")
    print(f"{'run':22s} {'steps':>6s} {'tokens':>10s} {'val loss':>9s} {'bits/byte':>9s} "
          f"{'tok/s run':>10s} {'tok/s side-by-side':>18s} {'wall s':>7s}")
    for r in runs:
        print(f"{r['name']:22s} {r['steps']:6d} {r['tokens']:10,d} {r['val_loss']:9.4f} "
              f"{r['val_bits_per_byte']:9.4f} {r['train_tok_per_s']:10,.0f} "
              f"{r['side_by_side_tok_per_s']:18,.0f} {r['wall_s']:7.0f}")
    base, thinker = runs[0], runs[1]
    print(f"learned think gates (0 at init: thinking off): {thinker['think_gate']}")
    change = 100 * (thinker["val_loss"] - base["val_loss"]) / base["val_loss"]
    print(f"\nthink_steps={args.think} vs 0 at equal steps and tokens: val loss "
          f"{'lower' if change < 0 else 'higher'} by {abs(change):.1f}% "
          f"(the blog claims 46% lower); training costs "
          f"{speeds[0] / speeds[args.think]:.2f}x the time per token (side by side)")
    (out / "results.json").write_text(json.dumps(runs, indent=1))
    print(f"results: {out / 'results.json'}")


def _bytes_per_token(args, tokenizer) -> float:
    """UTF-8 bytes per token of the validation tokens scored, to turn nats/token into bits/byte
    (EOS tokens count as tokens of 0 bytes, as their loss counts in the mean)."""
    tokens = load_or_build(args.data, "val", tokenizer, args.data_dir).tokens
    sample = [int(t) for t in tokens[:args.eval_batches * args.batch_size * args.seq_len]]
    text_bytes = len(tokenizer.decode_bytes([t for t in sample if t != tokenizer.eos_id]))
    return text_bytes / len(sample)


if __name__ == "__main__":
    main()
