"""A model family defined entirely in this file goes through the whole pipeline.

This module is both the test and the family: its top half is a model module (config dataclass,
model, record), exactly what a new family under tinylm/models/ would hold. The test points
TINYLM_PLUGINS at this file, so every tinylm process (the CLI, evaluation children, tournament
workers) finds the family, then runs train -> eval -> tournament -> a depth-gradient merge ->
single-file export -> generate, touching no file of tinylm. The model is a small stacked
recurrent net (no attention), so nothing in tinylm can lean on llama's layout by accident.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinylm.models.family import ExportSpec, Family, Preset

# %% export


@dataclass
class ToyRNNConfig:
    vocab_size: int = 257
    dim: int = 16
    n_layers: int = 2
    context_len: int = 32

    def __post_init__(self):
        if min(self.vocab_size, self.dim, self.n_layers, self.context_len) < 1:
            raise ValueError("every size must be >= 1")


class ToyState:
    """The 'cache' of a recurrent model: each cell's last hidden state (layers, B, dim)."""

    def __init__(self, n_layers, batch, dim, device, dtype):
        self.h = torch.zeros(n_layers, batch, dim, device=device, dtype=dtype)


class Cell(nn.Module):
    """x_t + tanh(W_x norm(x_t) + W_h h_{t-1}), one step at a time."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.Parameter(torch.ones(dim))
        self.wx = nn.Linear(dim, dim, bias=False)
        self.wh = nn.Linear(dim, dim, bias=False)

    def forward(self, x, h):  # x (B, T, dim), h (B, dim) -> (B, T, dim), last h
        inputs = self.wx(F.rms_norm(x, (x.shape[-1],), self.norm))
        outs = []
        for t in range(x.shape[1]):
            h = torch.tanh(inputs[:, t] + self.wh(h))
            outs.append(h)
        return x + torch.stack(outs, dim=1), h


class ToyRNN(nn.Module):
    family = "toyrnn"

    def __init__(self, config: ToyRNNConfig):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.dim)
        self.cells = nn.ModuleList(Cell(config.dim) for _ in range(config.n_layers))
        self.norm = nn.Parameter(torch.ones(config.dim))
        nn.init.normal_(self.emb.weight, std=0.1)
        for cell in self.cells:
            nn.init.normal_(cell.wx.weight, std=1 / math.sqrt(config.dim))
            nn.init.normal_(cell.wh.weight, std=0.5 / math.sqrt(config.dim))

    def forward(self, idx, cache=None, pos=0):
        x = self.emb(idx)  # (B, T, dim)
        if cache is None or pos == 0:
            state = torch.zeros(len(self.cells), idx.shape[0], self.config.dim,
                                device=x.device, dtype=x.dtype)
        else:
            state = cache.h
        new = []
        for i, cell in enumerate(self.cells):
            x, h = cell(x, state[i])
            new.append(h)
        if cache is not None:
            cache.h = torch.stack(new)
        return F.rms_norm(x, (x.shape[-1],), self.norm) @ self.emb.weight.t()

    def new_cache(self, batch, max_len=None, device=None, dtype=None):
        weight = self.emb.weight
        return ToyState(len(self.cells), batch, self.config.dim, device or weight.device,
                        dtype or weight.dtype)
# %% end export


def _group(name: str) -> str:
    return "embeddings" if name.startswith("emb") else "norms" if name == "norm" else "recurrent"


def _depth(names, config):
    last = max(1, config.n_layers - 1)
    return {n: int(n.split(".")[1]) / last for n in names if n.startswith("cells.")}


FAMILY = Family(
    name="toyrnn", config_class=ToyRNNConfig, model_class=ToyRNN,
    presets={"toyrnn-debug": Preset("a 2-cell recurrent byte model, for the family test",
                                    model={"dim": 16, "n_layers": 2, "context_len": 32},
                                    train={"lr": 3e-3, "batch_size": 8, "warmup_steps": 5})},
    groups=("embeddings", "norms", "recurrent"), group_of=_group, depth_of=_depth,
    no_weight_decay=lambda name, p: p.ndim < 2 or name.startswith("emb"),
    export=ExportSpec(sources=(__name__,), model="ToyRNN", config="ToyRNNConfig"))


# --------------------------------------------------------------------------- the test

def _tinylm(*args, env):
    proc = subprocess.run([sys.executable, "-m", "tinylm", *args], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"tinylm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_a_family_from_one_file_goes_through_the_pipeline(tmp_path):
    from tinylm.train.checkpoint import list_checkpoints, load_checkpoint

    env = {**os.environ, "TINYLM_PLUGINS": str(Path(__file__).resolve())}
    assert "recurrent" in _tinylm("info", "toyrnn-debug", env=env)
    run = tmp_path / "run"
    _tinylm("train", "--preset", "toyrnn-debug", "--data", "tinystories", "--steps", "40",
            "--ckpt-every", "10", "--eval-every", "20", "--out", str(run), "--no-progress",
            env=env)
    steps = list_checkpoints(run / "checkpoints")
    assert [p.name for p in steps] == [f"step_{s:08d}" for s in (10, 20, 30, 40)]
    assert "composite" in _tinylm("eval", str(steps[-1]), "--limit", "2", env=env)

    _tinylm("tournament", str(run), "--top-k", "2", "--generations", "1", "--t", "0.5",
            "--limit", "2", "--workers", "1", env=env)
    champion = load_checkpoint(run / "champion")
    assert champion.meta["family"] == "toyrnn"

    # a depth gradient: the record puts cells.0 at depth 0 and cells.1 at depth 1
    a, b = load_checkpoint(steps[0]), load_checkpoint(steps[-1])
    _tinylm("merge", str(steps[0]), str(steps[-1]), "--gradient", "0,1", "--method", "lerp",
            "-o", str(tmp_path / "gradient"), env=env)
    merged = load_checkpoint(tmp_path / "gradient").model_state
    assert torch.equal(merged["cells.0.wx.weight"], a.model_state["cells.0.wx.weight"])
    assert torch.equal(merged["cells.1.wx.weight"], b.model_state["cells.1.wx.weight"])
    assert torch.equal(merged["emb.weight"], a.model_state["emb.weight"])  # outside: first value

    script = tmp_path / "toy.py"
    _tinylm("export", "single-file", str(run / "champion"), "-o", str(script),
            env=env)
    flags = ["--prompt", "Once upon", "-n", "40", "--temperature", "0.8", "--seed", "3"]
    ours = _tinylm("generate", str(run / "champion"), *flags, env=env)
    clean_env = {k: v for k, v in os.environ.items() if k != "TINYLM_PLUGINS"}
    exported = subprocess.run([sys.executable, str(script), *flags], capture_output=True,
                              text=True, env=clean_env, timeout=120, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == ours and len(ours) > len("Once upon\n")
