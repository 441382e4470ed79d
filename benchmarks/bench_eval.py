"""tinylm's evaluation harness against lm-evaluation-harness, on one glint-1.3-shaped checkpoint.

    python benchmarks/bench_eval.py [--ckpt CKPT] [--limit N] [--lm-eval-threads 1,2]
                                    [--lm-eval-batch 64] [--skip-lm-eval] [--out FILE]

What it does, in one run on one machine:
1. Without --ckpt, trains a glint-1.3-shaped model for 30 steps on TinyStories (the quick
   recipe of the issue) in --work, and uses its last checkpoint.
2. tinylm: `tinylm eval CKPT` (WikiText-2 + BLiMP + ARC-Easy, full sets unless --limit) in a
   fresh process with an empty cache, timed from process start to exit: the command as users
   run it (isolated benchmark processes, default settings: WikiText-2 windows sliding by half
   the context).
3. lm-eval: the same checkpoint through `TinyLMEvalLM` (HFLM's algorithm, batch --lm-eval-batch)
   on the local task configs (tinylm_wikitext2, tinylm_blimp: 67 paradigms, tinylm_arc_easy),
   in a fresh process, timed the same way, once per torch thread count in --lm-eval-threads
   (its best time is the one compared). Its data sets are converted to Arrow once before
   (untimed), as an lm-eval user's HF cache would hold them. tinylm runs again after lm-eval,
   so load changes on a shared machine show up as two tinylm times.
4. Agreement: BLiMP accuracy (lm-eval counts ties as right: compared with tinylm's
   acc_ties_correct, with the paradigms that differ), ARC-Easy acc / acc_norm / acc_bytes, and
   WikiText-2 bits per byte with lm-eval's protocol (tinylm re-run with --stride = the context:
   disjoint windows; not part of the timed suite).
5. Prints both wall times and the ratio, and every figure; --out writes them as JSON.

lm-eval is a peer, not a dependency (`pip install lm-eval`); without it the script says so and
times tinylm alone. CPU timings on a shared machine are noisy: compare the two lines of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TASKS = ["tinylm_wikitext2", "tinylm_blimp", "tinylm_arc_easy"]


def sh(args: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stdout[-3000:]}\n"
                 f"{proc.stderr[-3000:]}")
    return seconds, proc


def ensure_checkpoint(work: Path) -> Path:
    from tinylm.train.checkpoint import list_checkpoints

    run = work / "g13"
    if not list_checkpoints(run / "checkpoints"):
        print(f"training a glint-1.3-shaped model for 30 steps into {run} ...", flush=True)
        sh([sys.executable, "-m", "tinylm", "train", "--preset", "glint-1.3", "--data",
            "tinystories", "--steps", "30", "--out", str(run), "--no-progress"],
           {"TINYLM_CACHE": str(work / "tokens")})
    return list_checkpoints(run / "checkpoints")[-1]


def run_tinylm(ckpt: Path, cache: Path, out: Path, extra: list[str]) -> tuple[float, dict]:
    seconds, _ = sh([sys.executable, "-m", "tinylm", "eval", str(ckpt), "--cache-dir",
                     str(cache), "-o", str(out), *extra])
    return seconds, json.loads(out.read_text())


def run_lm_eval(ckpt: Path, out: Path, limit, threads: int, batch: int,
                hf_cache: Path) -> tuple[float, dict]:
    args = [sys.executable, __file__, "--lm-eval-child", str(ckpt), "--json", str(out),
            "--lm-eval-threads", str(threads), "--lm-eval-batch", str(batch)]
    if limit:
        args += ["--limit", str(limit)]
    seconds, _ = sh(args, {"HF_DATASETS_CACHE": str(hf_cache), "HF_DATASETS_OFFLINE": "1",
                           "HF_HUB_OFFLINE": "1"})
    return seconds, json.loads(out.read_text())


def lm_eval_child(args) -> None:
    """In a fresh process: lm_eval.simple_evaluate with the adapter; results (and BLiMP's per
    paradigm accuracies) to --json."""
    import torch

    torch.set_num_threads(int(args.lm_eval_threads))
    from tinylm.eval.lm_eval_adapter import TinyLMEvalLM
    from tinylm.eval.lm_eval_adapter import run_lm_eval as simple

    lm = TinyLMEvalLM(pretrained=args.lm_eval_child, batch_size=args.lm_eval_batch)
    results = simple(lm, TASKS, limit=args.limit)["results"]
    Path(args.json).write_text(json.dumps({k: {m: v for m, v in r.items()
                                               if isinstance(v, (int, float, str))}
                                           for k, r in results.items()}))


# --------------------------------------------------------------------------- report

def agreement(ours: dict, ties: dict, wiki_lm_protocol: dict, theirs: dict) -> list[tuple]:
    """(what, tinylm, lm-eval, difference in items) rows."""
    blimp = ties["benchmarks"]["blimp"]["scores"]
    default = ours["benchmarks"]["blimp"]["scores"]
    rows = blimp_rows(blimp, default, theirs)
    return rows + arc_and_wiki_rows(ours, wiki_lm_protocol, theirs)


def blimp_rows(blimp: dict, default: dict, theirs: dict) -> list[tuple]:
    rows = []
    pairs = blimp["pairs"]
    lm_acc = theirs["tinylm_blimp"]["acc,none"]
    rows.append(("BLiMP acc (ties right, as lm-eval)", blimp["acc_ties_correct"], lm_acc,
                 f"{round((blimp['acc_ties_correct'] - lm_acc) * pairs):+d} pairs of {pairs}"))
    rows.append(("BLiMP acc (tinylm default: a tie counts half)", default["acc"], None,
                 f"{default['ties']} tied pairs"))
    return rows


def arc_and_wiki_rows(ours: dict, wiki_lm_protocol: dict, theirs: dict) -> list[tuple]:
    rows = []
    arc = ours["benchmarks"]["arc_easy"]["scores"]
    for metric in ("acc", "acc_norm", "acc_bytes"):
        lm = theirs["tinylm_arc_easy"][f"{metric},none"]
        diff = round((arc[metric] - lm) * arc["questions"])
        rows.append((f"ARC-Easy {metric}", arc[metric], lm,
                     f"{diff:+d} questions of {arc['questions']}"))
    wiki = wiki_lm_protocol["benchmarks"]["wikitext2"]["scores"]
    for metric in ("bits_per_byte", "byte_perplexity", "word_perplexity"):
        lm = theirs["tinylm_wikitext2"][f"{metric},none"]
        rows.append((f"WikiText-2 {metric} (stride = context)", wiki[metric], lm,
                     f"rel {abs(wiki[metric] - lm) / lm:.1e}"))
    return rows


def fmt(value) -> str:
    return "-" if value is None else f"{value:.6f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", help="checkpoint folder (default: train one, see the docs)")
    parser.add_argument("--work", default="/tmp/bench_eval")
    parser.add_argument("--limit", type=int, help="first N items per (sub)task (quick look)")
    parser.add_argument("--lm-eval-threads", default="1,2",
                        help="torch thread counts to time lm-eval with (the best is compared)")
    parser.add_argument("--lm-eval-batch", type=int, default=64)
    parser.add_argument("--skip-lm-eval", action="store_true")
    parser.add_argument("--out", help="write every figure as JSON here")
    parser.add_argument("--lm-eval-child", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lm_eval_child:
        lm_eval_child(args)
        return

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.ckpt) if args.ckpt else ensure_checkpoint(work)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    limit = ["--limit", str(args.limit)] if args.limit else []
    print(f"checkpoint {ckpt}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)

    t_tiny, ours = run_tinylm(ckpt, work / f"cache-{stamp}", work / f"tinylm-{stamp}.json", limit)
    print(f"tinylm eval (3 benchmarks): {t_tiny:.1f} s", flush=True)
    tiny_times = [t_tiny]
    figures = {"checkpoint": str(ckpt), "limit": args.limit, "tinylm_seconds": t_tiny,
               "tinylm": ours["summary"], "tinylm_scores": {
                   b: {k: v for k, v in r["scores"].items() if not isinstance(v, dict)}
                   for b, r in ours["benchmarks"].items()}}
    try:
        import lm_eval  # noqa: F401
        have_lm_eval = not args.skip_lm_eval
    except ImportError:
        print("lm-eval is not installed (pip install lm-eval): timing tinylm alone")
        have_lm_eval = False
    if have_lm_eval:
        hf_cache = work / "hf-datasets"
        thread_counts = [int(t) for t in str(args.lm_eval_threads).split(",")]
        run_lm_eval(ckpt, work / "warmup.json", 1, thread_counts[0], args.lm_eval_batch,
                    hf_cache)  # builds the Arrow caches; untimed
        lm_times = {}
        for threads in thread_counts:
            lm_times[threads], theirs = run_lm_eval(
                ckpt, work / f"lm_eval-{stamp}-t{threads}.json", args.limit, threads,
                args.lm_eval_batch, hf_cache)
            print(f"lm-eval + adapter (3 benchmarks, batch {args.lm_eval_batch}, {threads} "
                  f"thread(s)): {lm_times[threads]:.1f} s", flush=True)
        t_again, _ = run_tinylm(ckpt, work / f"cache-{stamp}-again",
                                work / f"tinylm-{stamp}-again.json", limit)
        tiny_times.append(t_again)
        print(f"tinylm eval again: {t_again:.1f} s", flush=True)
        t_tiny, t_lm = min(tiny_times), min(lm_times.values())
        context = ours["model"]["context_len"]
        _, wiki = run_tinylm(ckpt, work / f"cache-{stamp}-wiki", work / f"wiki-{stamp}.json",
                             ["--bench", "wikitext2", "--stride", str(context), *limit])
        _, ties = run_tinylm(ckpt, work / f"cache-{stamp}-ties", work / f"ties-{stamp}.json",
                             ["--bench", "blimp", "--blimp-ties", "correct", *limit])
        rows = agreement(ours, ties, wiki, theirs)
        per = ties["benchmarks"]["blimp"]["scores"]["by_paradigm"]
        differing = {uid: (row["acc"], theirs[f"tinylm_blimp_{uid}"]["acc,none"])
                     for uid, row in per.items()
                     if abs(row["acc"] - theirs[f"tinylm_blimp_{uid}"]["acc,none"]) > 1e-9}
        figures.update(tinylm_seconds_runs=tiny_times, lm_eval_seconds_by_threads=lm_times,
                       lm_eval_seconds=t_lm, ratio=t_lm / t_tiny, lm_eval=theirs,
                       agreement=[list(r) for r in rows], blimp_paradigms_differing=differing)
        print("\nagreement (same checkpoint):")
        print(f"  {'figure':52s} {'tinylm':>12s} {'lm-eval':>12s}  difference")
        for what, a, b, diff in rows:
            print(f"  {what:52s} {fmt(a):>12s} {fmt(b):>12s}  {diff}")
        print(f"  BLiMP paradigms whose accuracy differs: {len(differing)} of {len(per)} "
              f"{differing if differing else ''}")
        print(f"\nwall time (best of each): tinylm {t_tiny:.1f} s "
              f"(runs: {', '.join(f'{t:.1f}' for t in tiny_times)}), lm-eval {t_lm:.1f} s "
              f"(by threads: {', '.join(f'{k}: {v:.1f}' for k, v in lm_times.items())}): "
              f"tinylm is {t_lm / t_tiny:.2f}x faster")
    s = ours["summary"]
    w = ours["benchmarks"]["wikitext2"]["scores"]
    print(f"\ntinylm figures ({'full sets' if not args.limit else f'limit {args.limit}'}): "
          f"WikiText-2 CE {s['wikitext2_ce']:.4f} nats/token, {s['wikitext2_bpb']:.4f} bpb, "
          f"byte ppl {s['wikitext2_byte_ppl']:.3f} ({w['tokens']} tokens, stride "
          f"{w['stride']}); BLiMP {s['blimp_acc']:.4f} ({s['blimp_ties']} ties); ARC-Easy acc "
          f"{s['arc_easy_acc']:.4f}, acc_norm {s['arc_easy_acc_norm']:.4f}, acc_bytes "
          f"{s['arc_easy_acc_bytes']:.4f}; composite {s['composite']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1, default=str))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
