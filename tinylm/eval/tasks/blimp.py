"""BLiMP (Warstadt et al. 2020): 67 paradigms x 1,000 grammatical/ungrammatical minimal pairs.

As lm-eval's blimp task (`_template_yaml`): each sentence is the continuation " " + sentence of
an empty context, so it is conditioned on the prefix token (EOS here), and a pair is right when
the good sentence's total log-probability beats the bad one's. `limit` takes the first N pairs
of *each* paradigm, as lm-eval's --limit does per subtask.

Ties. lm-eval takes argmax over [good, bad], so an exact tie counts as right (np.argmax
sends ties to index 0). That rewards degenerate models: one with constant logits ties on every
pair whose sentences have the same token count and would score far above chance. By default a
tie counts half (`blimp_ties = half`, the expected score of a coin flip); `acc_ties_correct` is
lm-eval's number, for cross-checks, and `ties` says how many pairs tied.

All paradigms have 1,000 pairs, so the pooled accuracy equals lm-eval's group score (an
unweighted mean over subtasks); per-paradigm (UID) and per-field breakdowns come with it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from tinylm.eval.tasks import Benchmark, read_jsonl

VERSION = "1"
CREDIT = {"half": 0.5, "correct": 1.0, "wrong": 0.0}


def files(data_dir: Path) -> list[Path]:
    found = sorted((Path(data_dir) / "blimp").glob("*.jsonl"))
    return found or [Path(data_dir) / "blimp" / "*.jsonl"]  # a missing path names the problem


def load_pairs(data_dir: Path, limit: int | None, shard=None) -> list[dict]:
    paths = files(data_dir)
    if shard is not None:
        paths = paths[shard[0]::shard[1]]  # whole paradigms per shard
    pairs = []
    for path in paths:
        rows = read_jsonl(path)
        pairs += rows if limit is None else rows[:limit]
    return pairs


def run(scorer, settings, limit: int | None, data_dir: Path, shard=None) -> dict:
    """Scores; with a shard (i, n), the raw part of paradigms i, i + n, ... for `merge`."""
    pairs = load_pairs(data_dir, limit, shard)
    requests = []
    for pair in pairs:
        requests += [("", " " + pair["sentence_good"]), ("", " " + pair["sentence_bad"])]
    logprob, _, _ = scorer.loglikelihood_tokens(scorer.tokenize_requests(requests),
                                                need_greedy=False)
    part = {"uid": [p["UID"] for p in pairs], "field": [p["field"] for p in pairs],
            "term": [p["linguistics_term"] for p in pairs],
            "good": logprob[0::2].tolist(), "bad": logprob[1::2].tolist()}
    return part if shard is not None else merge([part], settings)


def merge(parts: list[dict], settings) -> dict:
    uid, field, term = ([x for p in parts for x in p[key]] for key in ("uid", "field", "term"))
    margin = np.array([x for p in parts for x in p["good"]]) - \
        np.array([x for p in parts for x in p["bad"]])
    right, tie = margin > 0, margin == 0
    credit = right + CREDIT[settings.blimp_ties] * tie
    by_uid, by_field = defaultdict(list), defaultdict(list)
    for i in range(len(margin)):
        by_uid[uid[i]].append(i)
        by_field[field[i]].append(i)
    paradigms = {name: {"acc": float(credit[rows].mean()), "pairs": len(rows),
                        "ties": int(tie[rows].sum()), "field": field[rows[0]],
                        "linguistics_term": term[rows[0]]}
                 for name, rows in sorted(by_uid.items())}
    fields = {name: {"acc": float(credit[rows].mean()), "pairs": len(rows),
                     "paradigms": len({uid[r] for r in rows})}
              for name, rows in sorted(by_field.items())}
    return {"acc": float(credit.mean()), "acc_ties_correct": float((right | tie).mean()),
            "acc_ties_wrong": float(right.mean()), "ties": int(tie.sum()), "pairs": len(margin),
            "mean_margin": float(margin.mean()), "tie_rule": settings.blimp_ties,
            "by_paradigm": paradigms, "by_field": fields}


BENCHMARKS = [Benchmark(
    name="blimp", version=VERSION,
    description="BLiMP, 67 paradigms of minimal pairs: accuracy, per paradigm and field",
    settings=("blimp_ties",), files=files, run=run, headline=("acc", "higher"),
    details=("acc_ties_correct", "ties", "pairs"), shards=8, merge=merge, cost=6.0)]
