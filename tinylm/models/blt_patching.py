"""Entropy patching for the BLT family: next-byte entropy -> patch starts, theta fitting,
patch statistics, and the first training stage that makes the frozen patcher.

BLT (Pagnoni et al. 2024, "Byte Latent Transformer: Patches Scale Better Than Tokens",
arXiv:2412.09871, section 2.3; read in facebookresearch/blt `bytelatent/data/patcher.py`)
groups bytes into patches with a small byte-level LM: where the next byte is hard to predict,
a new patch starts. Two rules, both in nats as the reference computes them:

- global: byte i starts a patch when H_{i-1} > theta, H_{i-1} being the entropy of the
  patcher's distribution for byte i (computed from bytes < i);
- monotonic: byte i starts a patch when H_{i-1} - H_{i-2} > theta (an entropy *rise*;
  for i = 1 there is no earlier entropy and the rise is 0).

Byte 0 always starts a patch. Every start depends only on bytes before it, so the rule is
causal and works while generating: when byte i arrives, whether it opens a patch is already
known. The reference's default global threshold is 1.335; the BLT-LLM card fitted 1.0917 for
4.4 bytes per patch. We fit theta on a sample to a target mean patch length (`fit_threshold`),
as the card did, instead of hard-coding one: it depends on how well the patcher was trained.

The patcher is an ordinary tinylm `llama` byte model. `train_patcher` is the first stage of a
BLT run (`Family.prepare_training`): it trains that model on the run's own training bytes with
a fixed seed, so a fresh clone with only the data gets the same patcher every time, then the
weights are frozen; or it loads one made with `tinylm train --tokenizer bytes`.
"""

from __future__ import annotations

import hashlib
import itertools
import math

import torch
import torch.nn.functional as F

# A fixed English sample for patch statistics where no data is at hand (`tinylm info`).
SAMPLE_TEXT = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "sun. One day, she saw a big, red ball in the park. She ran to the ball and kicked it "
    "very hard. The ball flew over the fence and into the garden of an old man. Lily was "
    "scared, but she knocked on his door and said, \"I am sorry, may I have my ball back?\" "
    "The old man smiled and gave her the ball. They became good friends.")
HISTOGRAM_EDGES = (1, 2, 3, 4, 5, 7, 9, 13, 17, 33)  # bins [1], [2], ..., [17, 32], [33, inf)

# %% export (copied into the single-file export; see export/single_file.py)

MODES = ("global", "monotonic")


# --------------------------------------------------------------------------- entropy -> starts

def next_byte_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each position's next-byte distribution: (..., V) -> (...)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def start_scores(entropy: torch.Tensor, mode: str) -> torch.Tensor:
    """entropy (B, T), entropy[:, i] predicting byte i + 1 -> the score deciding whether byte
    i + 1 starts a patch: H_i (global) or H_i - H_{i-1} (monotonic, 0 for i = 0)."""
    if mode == "global":
        return entropy
    rise = entropy - torch.cat([entropy[:, :1], entropy[:, :-1]], dim=1)
    return rise


def patch_starts(entropy: torch.Tensor, threshold: torch.Tensor | float,
                 mode: str) -> torch.Tensor:
    """Which bytes open a patch: (B, T) bool, column 0 all True; byte i's start is decided by
    the scores of positions < i only (no look-ahead)."""
    first = torch.ones_like(entropy[:, :1], dtype=torch.bool)
    return torch.cat([first, start_scores(entropy, mode)[:, :-1] > threshold], dim=1)


def patch_ids(starts: torch.Tensor) -> torch.Tensor:
    """(B, T) bool starts -> (B, T) long index of each byte's patch (0, 0, 1, 1, 1, 2, ...)."""
    return starts.long().cumsum(dim=1) - 1
# %% end export


# --------------------------------------------------------------------------- theta, statistics

def fit_threshold(entropy: torch.Tensor, target_len: float, mode: str) -> float:
    """The theta giving a mean patch length of about `target_len` bytes on these rows.

    A row of T bytes has 1 forced start plus one per score above theta among its T - 1
    deciding positions, so the wanted share of scores above theta is
    (T / target_len - 1) / (T - 1): theta is that upper quantile of the scores."""
    length = entropy.shape[1]
    scores = start_scores(entropy, mode)[:, :-1].reshape(-1).double()
    share = (length / target_len - 1) / max(1, length - 1)
    share = min(max(share, 0.0), 1.0)
    if share <= 0:
        return float(scores.max()) + 1.0
    return float(torch.quantile(scores, 1.0 - share))


def patch_lengths(starts: torch.Tensor) -> list[int]:
    """Bytes per patch over all rows (a row's last patch is cut by the row's end)."""
    lengths = []
    for row in starts.cpu():
        begins = row.nonzero().flatten().tolist() + [row.numel()]
        lengths += [b - a for a, b in itertools.pairwise(begins)]
    return lengths


def patch_statistics(starts: torch.Tensor) -> dict:
    """Mean and median bytes per patch and a histogram of patch lengths (JSON-able)."""
    lengths = sorted(patch_lengths(starts))
    edges = [*HISTOGRAM_EDGES, math.inf]
    histogram = {}
    for low, high in itertools.pairwise(edges):
        label = str(low) if high == low + 1 else f"{low}+" if high == math.inf \
            else f"{low}-{high - 1}"
        histogram[label] = sum(low <= n < high for n in lengths)
    n = len(lengths)
    median = (lengths[(n - 1) // 2] + lengths[n // 2]) / 2
    return {"patches": n, "bytes": sum(lengths), "mean": round(sum(lengths) / n, 3),
            "median": median, "histogram": histogram}


def format_statistics(stats: dict) -> str:
    bins = " ".join(f"{k}:{v}" for k, v in stats["histogram"].items())
    return (f"{stats['patches']:,} patches over {stats['bytes']:,} bytes, mean "
            f"{stats['mean']:.2f} / median {stats['median']:g} bytes per patch; "
            f"lengths {bins}")


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# --------------------------------------------------------------------------- the first stage

def train_patcher(patcher, tokens, steps: int, batch: int, seq_len: int, lr: float, seed: int,
                  log=print) -> list[float]:
    """Train the entropy byte-LM on `tokens` (a tinylm token array): AdamW, linear warmup then
    cosine, a fixed batch order from `seed`. Deterministic on one device; returns the losses.

    A plain loop rather than `tinylm train`: it runs inside the BLT run's setup, on the same
    training bytes, and leaves nothing on disk but what the BLT checkpoint stores."""
    from tinylm.data.sampler import train_batch
    from tinylm.train.schedule import lr_at

    device = next(patcher.parameters()).device
    params = list(patcher.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 10)
    losses = []
    patcher.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, peak=lr, total=steps, warmup=warmup, schedule="cosine",
                                min_lr_ratio=0.1, decay_frac=0.2)
        x, y = train_batch(tokens, seq_len, batch, seed, step, 0, 0, 1)
        logits = patcher(x.to(device))
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                               y.to(device).reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % max(1, steps // 5) == 0 or step + 1 == steps:
            log(f"patcher step {step + 1}/{steps}: loss {losses[-1]:.4f} nats "
                f"({losses[-1] / math.log(2):.3f} bits per byte)")
    for p in params:
        p.requires_grad_(False)
    patcher.eval()
    return losses


@torch.no_grad()
def sample_entropy(patcher, tokens, seq_len: int, rows: int, seed: int) -> torch.Tensor:
    """Next-byte entropy (rows, seq_len) on rows drawn from `tokens` (the theta-fitting sample)."""
    from tinylm.data.sampler import train_batch

    device = next(patcher.parameters()).device
    x, _ = train_batch(tokens, seq_len, rows, seed, 0, 0, 0, 1)
    return next_byte_entropy(patcher(x.to(device)))
