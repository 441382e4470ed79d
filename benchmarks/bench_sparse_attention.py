"""Dense causal SDPA vs block-sparse attention: forward time and peak memory against context.

    python benchmarks/bench_sparse_attention.py            # 1K .. 64K
    python benchmarks/bench_sparse_attention.py --quick    # 1K .. 8K
    python benchmarks/bench_sparse_attention.py --lengths 4096 16384 --heads 8

Both sides get the same q, k, v of shape (1, heads, T, head_dim), float32, on CPU: (a)
`F.scaled_dot_product_attention(..., is_causal=True)`, which on CPU dispatches to PyTorch's
fused flash-style kernel, so it is quadratic in time but not in memory; (b)
`block_sparse_attention` at the Blink-1 card's settings (block 32, top-2 blocks, window 16).

How it measures, and why:
- Every (method, length) runs in a fresh subprocess, so one measurement's allocator state and
  peak cannot leak into the next.
- Time: wall clock of one forward under `torch.no_grad()`, after one untimed warm-up: the
  median of --repeats runs, or of up to 25 when runs are short, or of 1 when one run is long
  (see `worker`). The box may be shared, and a median shrugs off the odd run that lost its
  core.
- Peak memory: `resource.getrusage(RUSAGE_SELF).ru_maxrss` (the process's peak resident set,
  KiB on Linux) after the warm-up minus the same reading taken just before it, once the inputs
  exist. That is the extra memory the forward needed at its high point: workspace, output and,
  for the sparse path, its padded K/V copies and chunk buffers. tracemalloc cannot see torch's
  allocator, and the profiler's memory view counts tensors but not a kernel's own scratch;
  resident memory counts both. It cannot see memory the allocator reuses from before the
  baseline, which is why nothing is freed between allocating the inputs and reading it.
- Skipping: a length is skipped for a method when extrapolating its last two measurements
  (a power law) says one run would take over --max-seconds or need over --max-gb; the row
  then reads "skipped (est. ...)".

After the table it prints the crossover (the first length where sparse is faster) and each
method's growth exponent: the least-squares slope of log time against log length.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

DEFAULT_LENGTHS = [1024, 2048, 4096, 8192, 16384, 32768, 65536]
QUICK_LENGTHS = [1024, 2048, 4096, 8192]
METHODS = ("dense", "sparse")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", help="context lengths (default 1K..64K)")
    p.add_argument("--quick", action="store_true", help="lengths 1K..8K, 2 repeats")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip runs estimated longer")
    p.add_argument("--max-gb", type=float, default=16.0, help="skip runs estimated bigger")
    p.add_argument("--worker", nargs=2, metavar=("METHOD", "LENGTH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    args.lengths = sorted(args.lengths or (QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS))
    return args


# --------------------------------------------------------------------------- one measurement

def worker(args: argparse.Namespace) -> None:
    """Measure one (method, length) in this process and print it as one JSON line."""
    import resource

    import torch
    import torch.nn.functional as F

    from tinylm.models.sparse_attention import BlockSparseConfig, block_sparse_attention

    if args.threads:
        torch.set_num_threads(args.threads)
    method, length = args.worker[0], int(args.worker[1])
    config = BlockSparseConfig(block_size=32, top_k=2, window=16)  # the Blink-1 card
    if method == "dense":
        def forward():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        def forward():
            return block_sparse_attention(q, k, v, 0, config)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, args.heads, length, args.head_dim, generator=g) for _ in "qkv")
    with torch.no_grad():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        forward()  # warm-up, and the run whose peak we read
        warm = time.perf_counter() - start
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        # at least `repeats` timed runs, more (up to a second's worth) when runs are short so
        # the median has enough samples; a long run is its own warm-up, so time just one more
        wanted = args.repeats if warm * args.repeats < args.max_seconds else 1
        times = []
        while len(times) < wanted or (sum(times) < 1.0 and len(times) < 25):
            start = time.perf_counter()
            forward()
            times.append(time.perf_counter() - start)
    print(json.dumps({"ms": 1000 * statistics.median(times), "peak_mb": peak_mb,
                      "runs": len(times), "threads": torch.get_num_threads()}))


def measure(args: argparse.Namespace, method: str, length: int) -> dict:
    """Run `worker` in a fresh interpreter; a crash or hang becomes {"error": ...}."""
    cmd = [sys.executable, __file__, "--worker", method, str(length),
           "--heads", str(args.heads), "--head-dim", str(args.head_dim),
           "--repeats", str(args.repeats), "--max-seconds", str(args.max_seconds)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    limit = 5 * args.max_seconds + 120  # warm-up + repeats of a run at the limit, + slack
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {limit:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {done.returncode}: {tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- extrapolation

def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of log(value) against log(length)."""
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(max(value, 1e-9)) for _, value in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
            / sum((x - mx) ** 2 for x in xs))


def estimate(history: list[tuple[int, dict]], length: int, key: str, default_exp: float) -> float:
    """Extrapolate `key` to `length` by a power law through the last two measurements."""
    if not history:
        return 0.0
    n1, last = history[-1]
    exp = slope([(n, r[key] + 1e-3) for n, r in history[-2:]]) if len(history) > 1 else default_exp
    return last[key] * (length / n1) ** max(exp, 0.0)


def too_big(args, history, length, method) -> str | None:
    """Why `method` at `length` should be skipped, or None to run it."""
    quadratic = 2.0 if method == "dense" else 1.0  # until two points say otherwise
    est_s = estimate(history, length, "ms", quadratic) / 1000
    est_gb = estimate(history, length, "peak_mb", quadratic) / 1024
    if est_s > args.max_seconds or est_gb > args.max_gb:
        return f"skipped (est. {est_s:.0f} s, {est_gb:.1f} GB)"
    return None


# --------------------------------------------------------------------------- report

def run(args: argparse.Namespace) -> None:
    print(f"block-sparse (block 32, top-2, window 16) vs dense causal SDPA, forward, batch 1, "
          f"heads {args.heads}, head_dim {args.head_dim}, float32, CPU")
    header = (f"{'length':>7} | {'dense ms':>10} | {'sparse ms':>10} | {'ratio':>6} | "
              f"{'dense peak MB':>13} | {'sparse peak MB':>14}")
    print(header + "\n" + "-" * len(header), flush=True)
    history = {m: [] for m in METHODS}
    rows = []
    for length in args.lengths:
        result = {}
        for method in METHODS:
            reason = too_big(args, history[method], length, method)
            result[method] = {"error": reason} if reason else measure(args, method, length)
            if "error" not in result[method]:
                history[method].append((length, result[method]))
        rows.append((length, result))
        print(format_row(length, result), flush=True)
    threads = {r["threads"] for _, res in rows for r in res.values() if "threads" in r}
    print(f"\nratio = dense ms / sparse ms (> 1: sparse faster); threads: {sorted(threads)}")
    print(summary(history))


def format_row(length: int, result: dict) -> str:
    dense, sparse = result["dense"], result["sparse"]
    if "error" in dense or "error" in sparse:
        cells = [f"{r['ms']:10.1f}" if "error" not in r else r["error"] for r in (dense, sparse)]
        mems = [f"{r['peak_mb']:.1f}" if "error" not in r else "-" for r in (dense, sparse)]
        return (f"{length:>7} | {cells[0]:>10} | {cells[1]:>10} | {'-':>6} | {mems[0]:>13} | "
                f"{mems[1]:>14}")
    return (f"{length:>7} | {dense['ms']:10.1f} | {sparse['ms']:10.1f} | "
            f"{dense['ms'] / sparse['ms']:6.2f} | {dense['peak_mb']:13.1f} | "
            f"{sparse['peak_mb']:14.1f}")


def summary(history: dict) -> str:
    dense_ms = {n: r["ms"] for n, r in history["dense"]}
    faster = [n for n, r in history["sparse"] if n in dense_ms and r["ms"] < dense_ms[n]]
    lines = [f"crossover: sparse first faster at length {faster[0]}" if faster
             else "crossover: sparse was not faster at any length measured by both"]
    for method in METHODS:
        points = [(n, r["ms"]) for n, r in history[method]]
        if len(points) < 2:
            lines.append(f"growth exponent {method}: too few lengths measured")
            continue
        text = f"growth exponent {method}: {slope(points):.2f} over {points[0][0]}-{points[-1][0]}"
        if len(points) >= 4:  # small lengths are mostly fixed overhead: show the tail too
            tail = points[-3:]
            text += f" ({slope(tail):.2f} over {tail[0][0]}-{tail[-1][0]})"
        lines.append(text)
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
