"""tinylm's state-dict SLERP against mergekit's, on two glint-1.3-shaped checkpoints.

    python benchmarks/bench_merge.py [--close 0.05] [--repeats 5] [--cli-repeats 3] [--threads 1]

What it does:
1. Builds two `Llama(LlamaConfig(vocab_size=500))` state dicts (glint-1.3 shape) from different
   seeds; with `--close F` the second is the first plus F times an independent init, like two
   checkpoints of one run.
2. For two settings, a constant t = 0.5 and mergekit's own `examples/gradient-slerp.yml` t
   (self_attn/mlp filters with 5-anchor depth gradients, 0.5 elsewhere):
   - times tinylm's `merge_state_dicts` in memory, with safetensors load/save in-process (median
     of `--repeats`), and as a user would run it from files (a fresh `python` process: import,
     load two safetensors, merge, save; median of `--cli-repeats`);
   - exports both checkpoints to the Hugging Face Llama layout (config.json + safetensors, tied
     embeddings, no tokenizer), runs `mergekit-yaml config.yml out --no-copy-tokenizer` (the
     whole user-visible run, median of `--cli-repeats`) and mergekit's `run_merge` in-process;
   - converts mergekit's output back and reports the max abs difference per setting.
3. Checks tinylm's `slerp_tensor` against mergekit's `slerp` kernel on edge cases.

mergekit is a peer, not a dependency (`pip install mergekit`); without it the script says so
and times tinylm alone. tinylm merges with `split_of=llama_fused_splits(config)` so fused wqkv
and w13 get one angle per q/k/v and gate/up part, exactly as mergekit sees them.
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
import textwrap
import time
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tinylm.merge.slerp import merge_state_dicts, slerp_tensor
from tinylm.models import get_family
from tinylm.models.llama import Llama, LlamaConfig
from tinylm.models.llama import fused_splits as llama_fused_splits

ATTN_GRADIENT = [0, 0.5, 0.3, 0.7, 1]  # mergekit examples/gradient-slerp.yml
MLP_GRADIENT = [1, 0.5, 0.7, 0.3, 0]
SETTINGS = {
    "constant t=0.5": ({}, "  t: 0.5"),
    "gradient-slerp.yml": ({"attention": ATTN_GRADIENT, "mlp": MLP_GRADIENT}, textwrap.indent(
        f"t:\n  - filter: self_attn\n    value: {ATTN_GRADIENT}\n"
        f"  - filter: mlp\n    value: {MLP_GRADIENT}\n  - value: 0.5", "  ")),
}


# --------------------------------------------------------------------------- checkpoints

def make_pair(close: float) -> tuple[LlamaConfig, dict, dict]:
    config = LlamaConfig(vocab_size=500)
    torch.manual_seed(0)
    a = {k: v.detach().clone() for k, v in Llama(config).state_dict().items()}
    torch.manual_seed(1)
    other = {k: v.detach().clone() for k, v in Llama(config).state_dict().items()}
    if close > 0:  # other = a + close * (an independent init); norms get noise of that size too
        b = {k: a[k] + close * (other[k] - (1.0 if "norm" in k else 0.0)) for k in a}
    else:
        b = other
    return config, a, b


def write_hf(sd: dict, config: LlamaConfig, path: Path) -> None:
    """The checkpoint as a LlamaForCausalLM folder, through the llama record's HF mapping."""
    hf_config, tensors = get_family("llama").hf.to_hf(sd, config)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(hf_config, indent=2))
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def from_hf(path: Path) -> dict:
    """A LlamaForCausalLM folder (mergekit's output) back to tinylm's names."""
    hf_config = json.loads((path / "config.json").read_text())
    return get_family("llama").hf.from_hf(hf_config, read_hf(path))[1]


def read_hf(path: Path) -> dict:
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


# --------------------------------------------------------------------------- timing helpers

def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_cli(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed:\n{proc.stderr[-2000:]}")
    return elapsed


TINYLM_SCRIPT = """
import json, sys
from safetensors.torch import load_file, save_file
from tinylm.merge.slerp import merge_state_dicts
from tinylm.models.llama import fused_splits as llama_fused_splits
from tinylm.models.llama import LlamaConfig
a, b, out, groups = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
config = LlamaConfig(vocab_size=500)
merged = merge_state_dicts(load_file(a), load_file(b), 0.5, t_by_group=groups or None,
                           split_of=llama_fused_splits(config))
save_file(merged, out)
"""


def tinylm_file_to_file(tmp: Path, kwargs: dict) -> None:
    a, b = load_file(str(tmp / "a.safetensors")), load_file(str(tmp / "b.safetensors"))
    save_file(merge_state_dicts(a, b, 0.5, **kwargs), str(tmp / "tinylm_api.safetensors"))


def mergekit_api_run(run_merge, merge_config, out: Path, options) -> None:
    shutil.rmtree(out, ignore_errors=True)
    run_merge(merge_config, str(out), options)


def mergekit_yaml(a: Path, b: Path, n_layers: int, t_block: str) -> str:
    return (f"slices:\n  - sources:\n      - model: {a}\n        layer_range: [0, {n_layers}]\n"
            f"      - model: {b}\n        layer_range: [0, {n_layers}]\n"
            f"merge_method: slerp\nbase_model: {a}\nparameters:\n{t_block}\ndtype: float32\n")


def max_diff(x: dict, y: dict) -> float:
    assert x.keys() == y.keys(), sorted(set(x) ^ set(y))
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x)


# --------------------------------------------------------------------------- main

def kernel_check(mk_slerp) -> None:
    """tinylm slerp_tensor vs mergekit's kernel (which takes a leading output axis)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(64, 48, generator=gen)
    ortho = torch.randn(64, 48, generator=gen)
    ortho -= (ortho * a).sum() / a.norm() ** 2 * a
    ortho *= a.norm() / ortho.norm()
    cases = {"random": torch.randn(64, 48, generator=gen),
             "near-parallel": 2 * a + 1e-4 * torch.randn(64, 48, generator=gen),
             "obtuse (cos=-0.6)": -0.6 * a + 0.8 * ortho,
             "antiparallel": -a, "zero a": None}
    print("\nkernel check, t=0.3, max abs diff tinylm vs mergekit.slerp:")
    for label, b in cases.items():
        x, y = (torch.zeros_like(a), a) if b is None else (a, b)
        for dtype in (torch.float32, torch.bfloat16):
            ours = slerp_tensor(x.to(dtype), y.to(dtype), 0.3)
            theirs = mk_slerp(torch.tensor([0.3]), x.to(dtype)[None], y.to(dtype)[None])[0]
            diff = float((ours.double() - theirs.double()).abs().max())
            note = "   (differs by design: we lerp a zero tensor)" if b is None else ""
            print(f"  {label:<18} {str(dtype)[6:]:<9} {diff:.2e}{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--close", type=float, default=0.0,
                        help="make B = A + close * independent init (0: independent seeds)")
    parser.add_argument("--repeats", type=int, default=5, help="in-process timing repeats")
    parser.add_argument("--cli-repeats", type=int, default=3, help="CLI timing repeats")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads here and OMP_NUM_THREADS for the child processes "
                             "(on a busy 2-core box, 2 OpenMP threads can stall every op)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    config, a, b = make_pair(args.close)
    n_params = sum(v.numel() for v in a.values())
    print(f"glint-1.3 shape: {n_params:,} parameters in {len(a)} tensors, float32; "
          f"B = {'independent seed' if args.close == 0 else f'A + {args.close} x noise'}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    try:
        from importlib.metadata import version

        import mergekit
        import yaml
        start = time.perf_counter()
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.merge_methods.slerp import slerp as mk_slerp
        from mergekit.options import MergeOptions
        mk_import = time.perf_counter() - start
        mk_cli = shutil.which("mergekit-yaml")
        print(f"mergekit {version('mergekit')} ({mergekit.__file__.rsplit('/', 2)[0]}), "
              f"import {mk_import:.2f} s, CLI: {mk_cli or 'not on PATH'}")
    except ImportError as err:
        mergekit = None
        print(f"mergekit NOT AVAILABLE ({err}); timing tinylm alone. `pip install mergekit`.")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_file(a, str(tmp / "a.safetensors"))
        save_file(b, str(tmp / "b.safetensors"))
        if mergekit:
            write_hf(a, config, tmp / "hf_a")
            write_hf(b, config, tmp / "hf_b")
        for label, (groups, t_block) in SETTINGS.items():
            print(f"\n== {label}")
            kwargs = {"t_by_group": groups or None, "split_of": llama_fused_splits(config)}
            ours, stats = merge_state_dicts(a, b, 0.5, return_stats=True, **kwargs)
            t_mem = median_time(partial(merge_state_dicts, a, b, 0.5, **kwargs), args.repeats)
            t_io = median_time(partial(tinylm_file_to_file, tmp, kwargs), args.repeats)
            cmd = [sys.executable, "-c", TINYLM_SCRIPT, str(tmp / "a.safetensors"),
                   str(tmp / "b.safetensors"), str(tmp / "tinylm_out.safetensors"),
                   json.dumps(groups)]
            t_file = statistics.median(run_cli(cmd) for _ in range(args.cli_repeats))
            print(f"tinylm  merge_state_dicts in memory : {t_mem * 1e3:9.1f} ms   "
                  f"({stats.slerp} slerp, {stats.parallel} parallel, {stats.zero} zero, "
                  f"{len(stats.antiparallel)} antiparallel)")
            print(f"tinylm  load+merge+save in-process  : {t_io * 1e3:9.1f} ms")
            print(f"tinylm  python process, file->file  : {t_file * 1e3:9.1f} ms")
            if not mergekit:
                continue
            cfg_text = mergekit_yaml(tmp / "hf_a", tmp / "hf_b", config.n_layers, t_block)
            (tmp / "merge.yml").write_text(cfg_text)
            out = tmp / "mk_out"
            t_cli = []
            for _ in range(args.cli_repeats):
                shutil.rmtree(out, ignore_errors=True)
                t_cli.append(run_cli([mk_cli, str(tmp / "merge.yml"), str(out),
                                      "--no-copy-tokenizer", "--quiet"]))
            t_cli = statistics.median(t_cli)
            merge_config = MergeConfiguration.model_validate(yaml.safe_load(cfg_text))
            t_api = median_time(partial(mergekit_api_run, run_merge, merge_config, tmp / "mk_api",
                                        MergeOptions(copy_tokenizer=False, quiet=True)),
                                args.cli_repeats)
            theirs = from_hf(out)
            print(f"mergekit run_merge in-process       : {t_api * 1e3:9.1f} ms   "
                  f"ratio vs tinylm load+merge+save: {t_api / t_io:6.1f}x")
            print(f"mergekit-yaml CLI (whole run)       : {t_cli * 1e3:9.1f} ms   "
                  f"ratio vs tinylm python process:  {t_cli / t_file:6.1f}x")
            print(f"max abs diff tinylm vs mergekit     : {max_diff(ours, theirs):.3e}  "
                  f"(tensors {len(theirs)}/{len(ours)}; weights max |w| "
                  f"{max(float(v.abs().max()) for v in ours.values()):.3f})")
            fused = merge_state_dicts(a, b, 0.5, t_by_group=groups or None)
            print(f"  without split_of (one angle for fused wqkv/w13): "
                  f"{max_diff(fused, theirs):.3e}")
        if mergekit:
            kernel_check(mk_slerp)


if __name__ == "__main__":
    main()
