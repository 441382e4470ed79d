"""Uncertainty of benchmark scores, and paired comparisons of two models on the same items.

Standard errors (all over *items*, the only randomness an eval set has: which items were drawn):
- an accuracy is the mean of per-item credits c_i (0/1, or 0/0.5/1 for BLiMP's half-credit ties):
  se = sqrt(mean((c_i - mean c)^2) / n), which for 0/1 credits is exactly the binomial
  sqrt(p (1 - p) / n);
- a per-token or per-byte loss is a ratio of sums over documents, R = sum(y_d) / sum(x_d)
  (y = a document's NLL, x = its tokens or bytes). Its se is the delta-method (linearisation)
  estimate for a ratio estimator, se^2 = sum((y_d - R x_d)^2) / (n (n - 1) xbar^2) (Cochran,
  "Sampling Techniques", 3rd ed., section 6.4, with the sample variance of the residuals). A long
  article weighs more, as it does in R itself. `test_stats` checks it against a brute-force
  document bootstrap;
- the composite mean(CE, 1 - BLiMP, 1 - ARC) is a sum of three independent benchmarks' scores:
  se = sqrt(se_ce^2 + se_blimp^2 + se_arc^2) / 3.

Paired comparisons (two models scored on the *same* items, e.g. champion vs best checkpoint on
the report split) are far tighter than two separate error bars, since most of the item-to-item
variation is shared:
- `paired_bootstrap`: resample items with replacement (seeded), recompute both models' scores on
  each resample; the 95% CI is the 2.5/97.5 percentile of the difference, and the two-sided p is
  the share of resampled differences at least |diff| away from diff (the bootstrap distribution
  shifted to the null, Efron & Tibshirani 1993, ch. 16), with a +1 correction so p > 0;
- `mcnemar`: the exact McNemar test for two 0/1 accuracies, a two-sided binomial test of the
  discordant pairs (scipy.stats.binomtest).

`items(scores, benchmark, metric)` turns a benchmark's stored per-item outputs (see each task's
docstring) into arrays; `compare(scores_a, scores_b, benchmark, metric)` does the whole paired
comparison and refuses items that do not match.
"""

from __future__ import annotations

import math

import numpy as np

from tinylm.errors import TinyLMError

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


# --------------------------------------------------------------------------- standard errors

def binomial_se(p: float, n: int) -> float | None:
    """sqrt(p (1 - p) / n); None without items."""
    return math.sqrt(p * (1.0 - p) / n) if n > 0 else None


def mean_se(values) -> float | None:
    """se of a mean of per-item credits, over items (the binomial se for 0/1 credits)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return None
    return float(np.sqrt(values.var() / values.size))


def ratio_se(num, den) -> float | None:
    """Delta-method se of sum(num) / sum(den) over documents; None below two documents."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    n = num.size
    if n < 2 or den.sum() <= 0:
        return None
    ratio = num.sum() / den.sum()
    residual = num - ratio * den
    return float(np.sqrt((residual ** 2).sum() / (n * (n - 1))) / den.mean())


def composite_se(ce_se: float | None, blimp_se: float | None, arc_se: float | None
                 ) -> float | None:
    """se of mean(CE, 1 - BLiMP, 1 - ARC) for independent benchmarks; None if one is missing."""
    parts = (ce_se, blimp_se, arc_se)
    if any(s is None for s in parts):
        return None
    return math.sqrt(sum(s * s for s in parts)) / 3.0


def normal_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wald interval p +- z se."""
    se = binomial_se(p, n)
    return p - z * se, p + z * se


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927), better than Wald near 0 and 1 and for small n."""
    if n <= 0:
        raise TinyLMError("wilson_interval needs n >= 1")
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return centre - half, centre + half


# --------------------------------------------------------------------------- paired tests

def paired_bootstrap(a, b, den_a=None, den_b=None, n_resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """Bootstrap over items of score(a) - score(b), both scored on the same items.

    The score is mean(a) (accuracies), or sum(a) / sum(den_a) when denominators are given
    (per-token or per-byte losses over documents; each model may have its own, e.g. tokens).
    Returns {"diff", "ci_low", "ci_high", "se", "p", "n", "resamples", "seed"}.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise TinyLMError(f"paired_bootstrap needs two equal-length, non-empty score lists "
                          f"(got {a.shape} and {b.shape})")
    if n_resamples < 1:
        raise TinyLMError(f"n_resamples must be >= 1, got {n_resamples}")
    ratio = den_a is not None or den_b is not None
    da = np.ones_like(a) if den_a is None else np.asarray(den_a, dtype=float)
    db = np.ones_like(b) if den_b is None else np.asarray(den_b, dtype=float)
    if da.shape != a.shape or db.shape != b.shape:
        raise TinyLMError("paired_bootstrap: denominators must match their scores in length")
    diff = a.sum() / da.sum() - b.sum() / db.sum()
    rng = np.random.default_rng(seed)
    n, chunk = a.size, max(1, 2_000_000 // a.size)  # ~16 MB of indices at a time
    draws = []
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        if ratio:
            draws.append(a[idx].sum(1) / da[idx].sum(1) - b[idx].sum(1) / db[idx].sum(1))
        else:  # mean(a) - mean(b) = mean(a - b): one gather instead of two
            draws.append((a - b)[idx].mean(1))
    draws = np.concatenate(draws)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    extreme = int((np.abs(draws - diff) >= abs(diff) - 1e-12).sum())
    return {"diff": float(diff), "ci_low": float(low), "ci_high": float(high),
            "se": float(draws.std(ddof=1)) if draws.size > 1 else 0.0,
            "p": (1 + extreme) / (1 + draws.size), "n": int(n), "resamples": int(n_resamples),
            "seed": seed}


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test of two 0/1 accuracies on the same items.

    Only discordant items inform: b01 = a wrong and b right, b10 = a right and b wrong. Under
    "equally accurate" b10 ~ Binomial(b01 + b10, 1/2); p is the two-sided binomial test."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise TinyLMError(f"mcnemar needs two equal-length correctness lists (got {a.shape} "
                          f"and {b.shape})")
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise TinyLMError("mcnemar needs 0/1 correctness (BLiMP's half-credit ties: use "
                          "paired_bootstrap)")
    b10, b01 = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    p = binomtest(b10, b10 + b01, 0.5).pvalue if b10 + b01 else 1.0
    return {"diff": float(a.mean() - b.mean()) if a.size else 0.0, "a_only": b10,
            "b_only": b01, "p": float(p), "n": int(a.size)}


# --------------------------------------------------------------------------- per-item outputs

def _digits(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(float) - ord("0")


def decode_credits(text: str) -> np.ndarray:
    """A credit string ('0' wrong, '1' half (a tie), '2' right) -> credits 0, 0.5, 1."""
    return _digits(text) / 2.0


def encode_credits(credit) -> str:
    """Credits in {0, 0.5, 1} -> one digit each: twice the credit."""
    return "".join("012"[round(2 * c)] for c in np.asarray(credit, dtype=float).tolist())


def expand_ranges(text: str) -> list[str]:
    """'0-3,7,9-10' -> ['0', '1', '2', '3', '7', '9', '10']; other ids stay as written."""
    out = []
    for part in text.split(",") if text else []:
        first, _, last = part.partition("-")
        if last and first.isdigit() and last.isdigit():
            out += [str(i) for i in range(int(first), int(last) + 1)]
        else:
            out.append(part)
    return out


def compress_ranges(ids: list[str]) -> str:
    """Inverse of `expand_ranges`: runs of consecutive whole numbers become 'first-last'."""
    parts, run = [], []

    def flush():
        if run:
            parts.append(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run.clear()
    for text in ids:
        if not text.isdigit() or "," in text:
            flush()
            parts.append(text)
        elif run and int(text) == int(run[-1]) + 1 and str(int(text)) == text:
            run.append(text)
        else:
            flush()
            run.append(text)
    flush()
    return ",".join(parts)


def items(scores: dict, benchmark: str, metric: str | None = None) -> dict:
    """The per-item outputs of a benchmark's scores, as arrays.

    blimp: {"ids": ["UID/pairID", ...], "score": credits}; arc_*: {"ids", "score": 0/1 for
    `metric` (acc, acc_norm or acc_bytes)}; wikitext2: {"ids": document numbers, "score": NLL
    per document, "den": its tokens (ce_loss) or bytes (bits_per_byte, in nats: scale by 1/ln 2)}.
    """
    found = scores.get("items")
    if not found:
        raise TinyLMError(f"{benchmark}: these scores carry no per-item outputs (scored by an "
                          f"older tinylm? score again)")
    if benchmark == "blimp":
        ids = [f"{uid}/{pair}" for uid, text in found["pairs"] for pair in expand_ranges(text)]
        return {"ids": ids, "score": decode_credits(found["credit"])}
    if benchmark.startswith("arc_"):
        metric = metric or "acc"
        if metric not in found:
            raise TinyLMError(f"{benchmark}: no per-question {metric!r}; have acc, acc_norm, "
                              f"acc_bytes")
        return {"ids": list(found["ids"]), "score": _digits(found[metric])}
    if benchmark == "wikitext2":
        metric = metric or "ce_loss"
        den = {"ce_loss": "tokens", "bits_per_byte": "bytes"}.get(metric)
        if den is None:
            raise TinyLMError(f"wikitext2: per-document comparison of ce_loss or "
                              f"bits_per_byte, not {metric!r}")
        return {"ids": list(found["documents"]), "score": np.asarray(found["nll"], dtype=float),
                "den": np.asarray(found[den], dtype=float)}
    raise TinyLMError(f"no per-item outputs known for benchmark {benchmark!r}")


def compare(scores_a: dict, scores_b: dict, benchmark: str, metric: str | None = None,
            n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Model a minus model b on the same items of `benchmark`: the paired bootstrap, plus the
    exact McNemar test for ARC. bits_per_byte differences are in bits per byte."""
    a, b = items(scores_a, benchmark, metric), items(scores_b, benchmark, metric)
    if a["ids"] != b["ids"]:
        raise TinyLMError(f"{benchmark}: the two results scored different items (split, limit "
                          f"or data differ); a paired comparison needs the same items")
    result = paired_bootstrap(a["score"], b["score"], a.get("den"), b.get("den"),
                              n_resamples, seed)
    if benchmark == "wikitext2" and metric == "bits_per_byte":
        for key in ("diff", "ci_low", "ci_high", "se"):
            result[key] /= math.log(2)
    result.update(benchmark=benchmark, metric=metric or ("ce_loss" if benchmark == "wikitext2"
                                                         else "acc"), method="paired_bootstrap")
    if benchmark.startswith("arc_"):
        result["mcnemar_p"] = mcnemar(a["score"], b["score"])["p"]
    return result


def format_comparison(result: dict, percent: bool = False) -> str:
    """'+x ± y (95% CI), p = ...', y the larger distance from x to the CI's ends."""
    scale, unit = (100.0, " points") if percent else (1.0, "")
    diff = result["diff"] * scale
    half = max(result["ci_high"] * scale - diff, diff - result["ci_low"] * scale)
    p = result["p"]
    shown = f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"
    return f"{diff:+.4g} ± {half:.2g}{unit} (95% CI), p = {shown}"
