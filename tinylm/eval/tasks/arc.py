"""ARC-Easy and ARC-Challenge (Clark et al. 2018), test split, multiple choice by log-likelihood.

As lm-eval's arc_easy task (arc_easy.yaml, the multiple_choice branch of api/task.py): the
prompt is "Question: {question}\\nAnswer:" and each choice is scored as the continuation
" {text}". Metrics, all with lm-eval's names and its first-maximum tie-break:
- acc       : highest summed log-probability;
- acc_norm  : log-probability divided by the choice's length in *characters* (lm-eval's);
- acc_bytes : log-probability divided by the choice's length in UTF-8 *bytes* (lm-eval's
              acc_bytes; it equals acc_norm on ASCII choices, and it is tokenizer-independent).

Zero-shot by default. With `shots` k, k exemplars from the train split are drawn for each
question with `random.Random(f"{fewshot_seed}:{question id}")`, so a question gets the same
exemplars whatever `limit` or order, and never itself (nor a train question with the same text);
each is "Question: ...\\nAnswer: {correct text}", joined and followed by the test prompt with
"\\n\\n". lm-eval draws from one sequential generator instead, so its 5-shot prompts differ.

A prompt longer than the model's context loses its oldest tokens (left truncation, as lm-eval);
`truncated_questions` counts questions where that happened to any choice.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from tinylm.eval.tasks import Benchmark, read_jsonl

VERSION = "1"


def _split_file(data_dir: Path, subset: str, split: str) -> Path:
    name = {"easy": "Easy", "challenge": "Challenge"}[subset]
    return Path(data_dir) / f"arc-{subset}" / f"ARC-{name}-{split}.jsonl"


def prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def answer_index(item: dict) -> int:
    return item["choices"]["label"].index(item["answerKey"])


def fewshot_prefix(item: dict, train: list[dict], shots: int, seed: int) -> str:
    if shots == 0:
        return ""
    pool = [x for x in train if x["id"] != item["id"] and x["question"] != item["question"]]
    rng = random.Random(f"{seed}:{item['id']}")
    shown = rng.sample(pool, min(shots, len(pool)))
    return "".join(f"{prompt(x['question'])} {x['choices']['text'][answer_index(x)]}\n\n"
                   for x in shown)


def _first_argmax(values: np.ndarray) -> int:
    return int(np.argmax(values))


def make_run(subset: str):
    def run(scorer, settings, limit: int | None, data_dir: Path) -> dict:
        items = read_jsonl(_split_file(data_dir, subset, "test"))
        if limit is not None:
            items = items[:limit]
        train = read_jsonl(_split_file(data_dir, subset, "train")) if settings.shots else []
        requests, spans = [], []
        for item in items:
            context = fewshot_prefix(item, train, settings.shots, settings.fewshot_seed) + \
                prompt(item["question"])
            spans.append((len(requests), len(requests) + len(item["choices"]["text"])))
            requests += [(context, " " + text) for text in item["choices"]["text"]]
        logprob, _, truncated = scorer.loglikelihood_tokens(scorer.tokenize_requests(requests),
                                                            need_greedy=False)
        hits = {"acc": 0, "acc_norm": 0, "acc_bytes": 0}
        ties = cut = 0
        for item, (a, b) in zip(items, spans):
            lls, texts = logprob[a:b], item["choices"]["text"]
            gold = answer_index(item)
            chars = np.array([len(t) for t in texts], dtype=float)
            n_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=float)
            hits["acc"] += _first_argmax(lls) == gold
            hits["acc_norm"] += _first_argmax(lls / chars) == gold
            hits["acc_bytes"] += _first_argmax(lls / n_bytes) == gold
            ties += int((lls == lls.max()).sum() > 1)
            cut += bool(truncated[a:b].any())
        n = len(items)
        return {**{k: v / n for k, v in hits.items()}, "questions": n, "ties": ties,
                "truncated_questions": cut, "truncated_requests": int(truncated.sum()),
                "requests": len(requests), "shots": settings.shots,
                "fewshot_seed": settings.fewshot_seed, "chance": float(np.mean(
                    [1 / len(item["choices"]["text"]) for item in items]))}
    return run


def make_files(subset: str):
    def files(data_dir: Path) -> list[Path]:
        return [_split_file(data_dir, subset, "test"), _split_file(data_dir, subset, "train")]
    return files


BENCHMARKS = [Benchmark(
    name=f"arc_{subset}", version=VERSION,
    description=f"ARC-{subset.capitalize()} test: acc, acc_norm (chars), acc_bytes",
    settings=("shots", "fewshot_seed"), files=make_files(subset), run=make_run(subset),
    headline=("acc", "higher"),
    details=("acc_norm", "acc_bytes", "questions", "truncated_questions", "shots"))
    for subset in ("easy", "challenge")]
