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

Splits. `split = selection | report` halves every paradigm by a stable hash of the pair:
sha256(f"{UID}/{pairID}") even -> selection, odd -> report (the row's position in its file
stands in for a missing pairID). It depends on nothing but the pair, so the halves are the same
on every machine and run, whatever the limit or shard; `limit` then takes the first N pairs of
each paradigm's half. `all` scores every pair, as lm-eval.

Per-item outputs (`items`), for standard errors and paired tests: "pairs" lists
[UID, pair ids] per paradigm in UID order (ids in file order, runs of whole numbers written
'first-last'), and "credit" has one digit per pair in the same order, twice its credit: 2 right,
0 wrong, a tie 1 under the default `half` rule (2 or 0 under `correct` or `wrong`). `acc_se` is
the se of the mean credit over pairs (tinylm.eval.stats).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from tinylm.eval import stats
from tinylm.eval.tasks import Benchmark, read_jsonl

VERSION = "1"
CREDIT = {"half": 0.5, "correct": 1.0, "wrong": 0.0}


def files(data_dir: Path) -> list[Path]:
    found = sorted((Path(data_dir) / "blimp").glob("*.jsonl"))
    return found or [Path(data_dir) / "blimp" / "*.jsonl"]  # a missing path names the problem


def split_of(uid: str, pair_id: str) -> str:
    """'selection' or 'report': the parity of sha256(f"{uid}/{pair_id}")."""
    digest = hashlib.sha256(f"{uid}/{pair_id}".encode()).digest()
    return "selection" if digest[-1] % 2 == 0 else "report"


def load_pairs(data_dir: Path, limit: int | None, shard=None, split: str = "all") -> list[dict]:
    """The pairs scored, each with its "pair_id"; per paradigm, the split's half, then `limit`."""
    paths = files(data_dir)
    if shard is not None:
        paths = paths[shard[0]::shard[1]]  # whole paradigms per shard
    pairs = []
    for path in paths:
        rows = [{**row, "pair_id": str(row.get("pairID", n))}
                for n, row in enumerate(read_jsonl(path))]
        if split != "all":
            rows = [r for r in rows if split_of(r["UID"], r["pair_id"]) == split]
        pairs += rows if limit is None else rows[:limit]
    return pairs


def run(scorer, settings, limit: int | None, data_dir: Path, shard=None) -> dict:
    """Scores; with a shard (i, n), the raw part of paradigms i, i + n, ... for `merge`."""
    pairs = load_pairs(data_dir, limit, shard, settings.split)
    requests = []
    for pair in pairs:
        requests += [("", " " + pair["sentence_good"]), ("", " " + pair["sentence_bad"])]
    logprob, _, _ = scorer.loglikelihood_tokens(scorer.tokenize_requests(requests),
                                                need_greedy=False)
    part = {"uid": [p["UID"] for p in pairs], "field": [p["field"] for p in pairs],
            "term": [p["linguistics_term"] for p in pairs], "pair": [p["pair_id"] for p in pairs],
            "good": logprob[0::2].tolist(), "bad": logprob[1::2].tolist()}
    return part if shard is not None else merge([part], settings)


def merge(parts: list[dict], settings) -> dict:
    uid, field, term, pair = ([x for p in parts for x in p[key]]
                              for key in ("uid", "field", "term", "pair"))
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
            "acc_se": stats.mean_se(credit), "acc_ties_correct_se": stats.mean_se(right | tie),
            "acc_ties_wrong_se": stats.mean_se(right),
            "mean_margin": float(margin.mean()), "tie_rule": settings.blimp_ties,
            "split": settings.split, "by_paradigm": paradigms, "by_field": fields,
            "items": _items(uid, pair, credit)}


def _items(uid: list[str], pair: list[str], credit: np.ndarray) -> dict:
    """Per-pair credits in a stable order (paradigms by UID, pairs in file order), whatever
    the shards' order; compact enough to keep in every result."""
    order = sorted(range(len(uid)), key=lambda i: uid[i])  # stable: file order within a UID
    groups: dict[str, list[str]] = {}
    for i in order:
        groups.setdefault(uid[i], []).append(pair[i])
    return {"pairs": [[name, stats.compress_ranges(ids)] for name, ids in groups.items()],
            "credit": stats.encode_credits(credit[order])}


BENCHMARKS = [Benchmark(
    name="blimp", version=VERSION,
    description="BLiMP, 67 paradigms of minimal pairs: accuracy, per paradigm and field",
    settings=("blimp_ties", "split"), files=files, run=run, headline=("acc", "higher"),
    details=("acc_ties_correct", "ties", "pairs"), shards=8, merge=merge, cost=6.0)]
