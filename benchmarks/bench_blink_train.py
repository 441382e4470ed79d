"""Blink-1 training step speed with each attention kernel, on this CPU.

    python benchmarks/bench_blink_train.py [--threads 2] [--steps 10] [--batch 64] [--seq 256]

One full training step (forward, cross-entropy, backward, AdamW) of the `blink-1` preset on a
fixed random batch, timed for the three ways its attention can run: block-sparse with the
"gather" kernel (linear memory, made for long contexts), block-sparse with the "mask" kernel
(one boolean (T, T) mask and dense SDPA; what `auto` picks up to 512 keys) and plain dense
causal SDPA (a different model: no sparsity, shown as the floor). Prints ms a step, bytes/s and
the mask kernel's speed-up over gather. The trainer (`tinylm train --preset blink-1`) adds data
loading, clipping and logging on top; its own tok/s is in its metrics.jsonl.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
import torch.nn.functional as F

from tinylm.config import load_preset
from tinylm.models import build_model
from tinylm.models.sparse_attention import (BlockSparseConfig, block_sparse_attention,
                                            disable_block_sparse)


def step_time(kernel: str, args) -> float:
    preset = load_preset("blink-1")
    config = {**preset["model"], "vocab_size": 257}
    torch.manual_seed(0)
    model = build_model("looped", config)
    if kernel == "dense":
        disable_block_sparse(model)
    else:
        attention = functools.partial(block_sparse_attention, kernel=kernel,
                                      config=BlockSparseConfig(**config["sparse_attention"]))
        for module in model.modules():
            if getattr(module, "attention_fn", None) is not None:
                module.attention_fn = attention
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 257, (args.batch, args.seq), generator=g)
    y = torch.randint(0, 257, (args.batch, args.seq), generator=g)

    def step():
        loss = F.cross_entropy(model(x).view(-1, 257), y.view(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(3):  # warm-up
        step()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)  # other load only slows a step down


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=256)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"blink-1, batch {args.batch} x {args.seq} bytes, {args.threads} thread(s), "
          f"best of {args.steps} steps")
    seconds = {}
    for kernel in ("gather", "mask", "dense"):
        seconds[kernel] = step_time(kernel, args)
        rate = args.batch * args.seq / seconds[kernel]
        print(f"  {kernel:>6}: {seconds[kernel] * 1e3:7.1f} ms/step  {rate:>10,.0f} bytes/s")
    print(f"mask kernel vs gather: {seconds['gather'] / seconds['mask']:.2f}x faster")


if __name__ == "__main__":
    main()
