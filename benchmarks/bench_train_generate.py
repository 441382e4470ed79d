"""Training and generation speed of tinylm against Hugging Face `transformers`, Glint-1.3 shape.

    python benchmarks/bench_train_generate.py               # the full run (a few minutes)
    python benchmarks/bench_train_generate.py --quick       # a smoke run (about a minute)
    python benchmarks/bench_train_generate.py --threads 1 --rounds 5 --json out.json

The peer is what a user would otherwise pick: `LlamaForCausalLM` (transformers, SDPA attention)
built with the same config as tinylm's `Llama(LlamaConfig(vocab_size=500))`: dim 128, 4 layers,
4 heads, SwiGLU 384, context 256, RoPE base 10000, RMSNorm eps 1e-5, tied embeddings. Before
timing anything the script copies tinylm's weights into the peer (q/k/v are rows of tinylm's
fused `wqkv`, gate/up the halves of `w13`; RoPE's half-split layout is the same, so nothing is
permuted) and checks that the parameter counts match and that both give the same logits, so
the two sides compute the same function, not just the same shapes.

What is timed, on the same machine and in one run, with the same torch thread count:
- training: tokens/s of full steps (forward, cross-entropy, backward, gradient clipping at 1.0,
  AdamW step, zero_grad) on the same fixed batch (default 16 x 256 tokens). Both sides use
  tinylm's optimizer factory (fused AdamW on CPU, decay on matrices only), so the ratio is
  about the model, not the optimizer. tinylm is timed twice: eager (the trainer's default)
  and with forward + loss under `torch.compile`, as `tinylm train --compile true` runs it;
  compile time is reported apart.
- generation: new tokens/s, batch 1 and batch 64, a 16-token prompt, 128 new tokens, greedy,
  no early stop: tinylm's `generate_ids` (what `tinylm generate` runs) against the peer's
  `model.generate(do_sample=False, use_cache=True)`. Prefill is included on both sides.
- the machine's fp32 matmul peak: the best GFLOP/s of `torch.mm` over a few large shapes.

Achieved model FLOP/s, as a fraction of that peak:
- training: 6 N + 12 L d T FLOPs per token (N = all parameters, the tied embedding counted once
  since it is also the output head; L layers, d model width, T sequence length; the attention
  term counts the full T x T score and value products, as PaLM's appendix B does, although a
  causal kernel skips about half of them);
- generation: 2 N + 4 L d t per new token, with t the mean number of cached positions.

Noise: the box may be shared. Every measurement is taken --rounds times, the two sides
alternating round by round, and the table shows the fastest round and the median, with ratios
from the fastest (other load can only slow a round down). Reported ratios are tinylm / peer.
The load average is printed at the start and the end. With more than one thread and other
work on the machine, OpenMP's spin-waiting makes timings erratic for both sides (measured here:
the peer's batch-1 generation went from 0.24 s to 32 s); one thread, or
OMP_WAIT_POLICY=PASSIVE in the environment, keeps them steady.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

TARGETS = {"train": 1.3, "generate_b1": 10.0, "generate_b64": 3.0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed training steps per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per measurement")
    p.add_argument("--batch", type=int, default=16, help="training sequences per step")
    p.add_argument("--seq-len", type=int, default=256, help="training tokens per sequence")
    p.add_argument("--new-tokens", type=int, default=128, help="generated tokens per row")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--gen-batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads for both sides (default: all cores)")
    p.add_argument("--no-compile", action="store_true", help="skip tinylm + torch.compile")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 2 rounds, 2 steps, 32 new tokens, no compile")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.new_tokens, args.no_compile = 2, 2, 32, True
    return args


# --------------------------------------------------------------------------- the two models

def peer_config():
    from transformers import LlamaConfig as HFLlamaConfig

    return HFLlamaConfig(vocab_size=500, hidden_size=128, intermediate_size=384,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         rms_norm_eps=1e-5, rope_theta=10000, attn_implementation="sdpa")


def build_models(seed: int = 0):
    """(tinylm model, peer model) with the same weights."""
    from transformers import LlamaForCausalLM

    from tinylm.models import get_family
    from tinylm.models.llama import Llama, LlamaConfig

    torch.manual_seed(seed)
    ours = Llama(LlamaConfig(vocab_size=500))
    peer = LlamaForCausalLM(peer_config())
    n_ours = sum(p.numel() for p in ours.parameters())
    n_peer = sum(p.numel() for p in peer.parameters())
    if n_ours != n_peer:
        raise SystemExit(f"parameter counts differ: tinylm {n_ours:,}, transformers {n_peer:,}")
    _, tensors = get_family("llama").hf.to_hf(ours.state_dict(), ours.config)  # the record's map
    missing, unexpected = peer.load_state_dict(tensors, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:  # lm_head is tied
        raise SystemExit(f"weight copy failed: missing {missing}, unexpected {unexpected}")
    peer.generation_config.eos_token_id = None  # never stop early: both make every token
    peer.generation_config.pad_token_id = 0
    return ours, peer


@torch.no_grad()
def check_same_function(ours, peer, seq_len: int) -> float:
    """Max |logit difference| on a random batch; exits when the models disagree."""
    idx = torch.randint(0, ours.config.vocab_size, (2, seq_len))
    diff = (ours(idx) - peer(input_ids=idx).logits).abs().max().item()
    if diff > 1e-4:
        raise SystemExit(f"tinylm and transformers logits differ by {diff:.2e}: not the same model")
    return diff


# --------------------------------------------------------------------------- measurements

def matmul_peak(quick: bool) -> tuple[float, str]:
    """Best fp32 GFLOP/s of torch.mm over a few large shapes: (gflops, shape)."""
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048)] + ([] if quick else [(4096, 4096, 4096),
                                                                              (4096, 512, 4096)])
    best, best_shape = 0.0, ""
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        for _ in range(3 if quick else 5):
            start = time.perf_counter()
            torch.mm(a, b)
            gflops = 2 * m * k * n / (time.perf_counter() - start) / 1e9
            if gflops > best:
                best, best_shape = gflops, f"{m}x{k}x{n}"
    return best, best_shape


class Trainer:
    """One side's training step on a fixed batch, timed in rounds of `steps` steps."""

    def __init__(self, name, model, loss_fn, lr=1e-3):
        from tinylm.train.optim import build_optimizer

        self.name, self.model, self.loss_fn = name, model, loss_fn
        self.params = list(model.parameters())
        self.optimizer = build_optimizer(model, "adamw", lr, 0.1, (0.9, 0.95), 1e-8, "cpu")
        self.times: list[float] = []

    def step(self, x, y):
        loss = self.loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def round(self, x, y, steps: int):
        start = time.perf_counter()
        for _ in range(steps):
            loss = self.step(x, y)
        float(loss)
        self.times.append((time.perf_counter() - start) / steps)


def bench_training(args, ours_init, peer_init) -> tuple[list[Trainer], float]:
    import copy

    from tinylm.train.loop import lm_loss

    torch.manual_seed(1)
    x = torch.randint(0, 500, (args.batch, args.seq_len))
    y = torch.randint(0, 500, (args.batch, args.seq_len))
    peer = copy.deepcopy(peer_init).train()
    sides = [Trainer("transformers", peer,
                     lambda x, y: F.cross_entropy(peer(input_ids=x).logits.reshape(-1, 500),
                                                  y.reshape(-1))),
             Trainer("tinylm", (eager := copy.deepcopy(ours_init).train()),
                     lambda x, y: lm_loss(eager, x, y))]
    compile_s = 0.0
    if not args.no_compile:
        base = copy.deepcopy(ours_init).train()
        compiled = torch.compile(lm_loss)  # what `tinylm train --compile true` runs
        sides.append(Trainer("tinylm --compile", base, lambda x, y: compiled(base, x, y)))
        start = time.perf_counter()
        sides[-1].step(x, y)  # compiles forward and backward
        compile_s = time.perf_counter() - start
    for side in sides:  # warm-up: allocator, optimizer state, oneDNN/MKL caches
        side.step(x, y)
        side.step(x, y)
    for _ in range(args.rounds):
        for side in sides:
            side.round(x, y, args.steps)
    return sides, compile_s


def generate_ours(model, prompts, new_tokens):
    from tinylm.infer.generate import generate_ids
    from tinylm.infer.sampling import SamplingConfig

    return generate_ids(model, prompts.tolist(), new_tokens, SamplingConfig(temperature=0))


@torch.inference_mode()
def generate_peer(model, prompts, new_tokens):
    out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                         max_new_tokens=new_tokens, use_cache=True)
    return out[:, prompts.shape[1]:].tolist()


def bench_generation(args, ours, peer, batch: int) -> dict:
    ours, peer = ours.eval(), peer.eval()
    torch.manual_seed(2 + batch)
    prompts = torch.randint(0, 500, (batch, args.prompt_len))
    sides = {"transformers": lambda: generate_peer(peer, prompts, args.new_tokens),
             "tinylm": lambda: generate_ours(ours, prompts, args.new_tokens)}
    outputs = {name: run() for name, run in sides.items()}  # warm-up, and the ids to compare
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, run in sides.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    lengths_ok = all(len(row) == args.new_tokens for out in outputs.values() for row in out)
    same_rows = sum(a == b for a, b in zip(outputs["tinylm"], outputs["transformers"]))
    return {"times": times, "lengths_ok": lengths_ok, "same_rows": same_rows}


# --------------------------------------------------------------------------- report

def flops_per_token_train(config, seq_len: int, n_params: int) -> float:
    return 6 * n_params + 12 * config.n_layers * config.dim * seq_len


def flops_per_token_generate(config, prompt_len: int, new_tokens: int, n_params: int) -> float:
    mean_cached = prompt_len + new_tokens / 2
    return 2 * n_params + 4 * config.n_layers * config.dim * mean_cached


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:6.2f}x  (target >= {target:g}x: {'met' if ratio >= target else 'NOT met'})"


def main(argv=None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    import transformers

    ours, peer = build_models()
    n_params = sum(p.numel() for p in ours.parameters())
    diff = check_same_function(ours, peer, 64)
    peak, peak_shape = matmul_peak(args.quick)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{args.threads} thread(s) of {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f} at the start")
    if args.threads > 1 and "OMP_WAIT_POLICY" not in os.environ:
        print("note: on a shared machine, OpenMP threads that spin-wait for a descheduled peer "
              "can slow both sides 10x or more; use --threads 1 or OMP_WAIT_POLICY=PASSIVE")
    print(f"model: Glint-1.3 shape, {n_params:,} parameters on both sides; "
          f"max |logit diff| after copying weights: {diff:.1e}")
    print(f"fp32 matmul peak: {peak:,.1f} GFLOP/s (torch.mm {peak_shape})")
    results: dict = {"threads": args.threads, "params": n_params, "peak_gflops": peak,
                     "logit_diff": diff, "train": {}, "generate": {}}

    sides, compile_s = bench_training(args, ours, peer)
    tokens = args.batch * args.seq_len
    per_token = flops_per_token_train(ours.config, args.seq_len, n_params)
    print(f"\nTraining: batch {args.batch} x {args.seq_len} tokens, fp32, AdamW, "
          f"{args.rounds} rounds x {args.steps} steps"
          + ("" if args.no_compile else f" (torch.compile took {compile_s:.1f} s)"))
    print(f"  {'':18s} {'tok/s best':>11s} {'median':>9s} {'ms/step':>8s} {'% peak':>7s}")
    for side in sides:
        best, median = tokens / min(side.times), tokens / statistics.median(side.times)
        frac = best * per_token / (peak * 1e9)
        results["train"][side.name] = {"tok_s": best, "tok_s_median": median, "peak_frac": frac}
        print(f"  {side.name:18s} {best:11,.0f} {median:9,.0f} {1e3 * min(side.times):8.1f} "
              f"{100 * frac:6.1f}%")
    peer_best = results["train"]["transformers"]["tok_s"]
    for name in [s.name for s in sides[1:]]:
        ratio = results["train"][name]["tok_s"] / peer_best
        results["train"][name]["ratio"] = ratio
        print(f"  {name} / transformers: {verdict(ratio, TARGETS['train'])}")

    print(f"\nGeneration: prompt {args.prompt_len}, {args.new_tokens} new tokens, greedy, "
          f"{args.rounds} rounds")
    print(f"  {'':18s} {'batch':>5s} {'tok/s best':>11s} {'median':>9s} {'ms/token':>9s} "
          f"{'% peak':>7s}")
    for batch in args.gen_batches:
        gen = bench_generation(args, ours, peer, batch)
        new = batch * args.new_tokens
        per_token = flops_per_token_generate(ours.config, args.prompt_len, args.new_tokens,
                                             n_params)
        entry = {"same_greedy_rows": gen["same_rows"], "rows": batch}
        for name, times in gen["times"].items():
            best, median = new / min(times), new / statistics.median(times)
            frac = best * per_token / (peak * 1e9)
            entry[name] = {"tok_s": best, "tok_s_median": median, "peak_frac": frac}
            print(f"  {name:18s} {batch:5d} {best:11,.0f} {median:9,.0f} "
                  f"{1e3 * min(times) / args.new_tokens:9.3f} {100 * frac:6.2f}%")
        entry["ratio"] = entry["tinylm"]["tok_s"] / entry["transformers"]["tok_s"]
        results["generate"][f"b{batch}"] = entry
        target = TARGETS.get(f"generate_b{batch}")
        print(f"  tinylm / transformers at batch {batch}: "
              + (verdict(entry["ratio"], target) if target else f"{entry['ratio']:.2f}x")
              + f"; identical greedy rows: {gen['same_rows']}/{batch}"
              + ("" if gen["lengths_ok"] else "; WARNING: some rows stopped early"))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
