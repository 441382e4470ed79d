"""ARC-Easy and ARC-Challenge (Clark et al. 2018), multiple choice by log-likelihood.

Which questions: the test split for `split = all` (as lm-eval) and `report`, the validation
split for `selection`. Exemplars always come from the train split.

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

Per-item outputs (`items`): the question ids in file order and, for each of acc, acc_norm and
acc_bytes, a string with one digit per question (1 right, 0 wrong). `acc_se` etc. are binomial
standard errors over questions (tinylm.eval.stats).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from tinylm.eval import stats
from tinylm.eval.tasks import Benchmark, read_jsonl

VERSION = "1"
SPLIT_FILES = {"all": "test", "selection": "validation", "report": "test"}


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
        items = read_jsonl(_split_file(data_dir, subset, SPLIT_FILES[settings.split]))
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
        hits = {"acc": [], "acc_norm": [], "acc_bytes": []}
        ties = cut = 0
        for item, (a, b) in zip(items, spans):
            lls, texts = logprob[a:b], item["choices"]["text"]
            gold = answer_index(item)
            chars = np.array([len(t) for t in texts], dtype=float)
            n_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=float)
            hits["acc"].append(_first_argmax(lls) == gold)
            hits["acc_norm"].append(_first_argmax(lls / chars) == gold)
            hits["acc_bytes"].append(_first_argmax(lls / n_bytes) == gold)
            ties += int((lls == lls.max()).sum() > 1)
            cut += bool(truncated[a:b].any())
        n = len(items)
        return {**{k: sum(v) / n for k, v in hits.items()},
                **{f"{k}_se": stats.mean_se(v) for k, v in hits.items()},
                "questions": n, "ties": ties,
                "truncated_questions": cut, "truncated_requests": int(truncated.sum()),
                "requests": len(requests), "shots": settings.shots,
                "fewshot_seed": settings.fewshot_seed, "chance": float(np.mean(
                    [1 / len(item["choices"]["text"]) for item in items])),
                "split": settings.split,
                "items": {"ids": [item["id"] for item in items],
                          **{k: "".join("01"[int(h)] for h in v) for k, v in hits.items()}}}
    return run


def make_files(subset: str):
    def files(data_dir: Path, settings=None) -> list[Path]:
        split = SPLIT_FILES[settings.split if settings is not None else "all"]
        return [_split_file(data_dir, subset, split), _split_file(data_dir, subset, "train")]
    return files


BENCHMARKS = [Benchmark(
    name=f"arc_{subset}", version=VERSION,
    description=f"ARC-{subset.capitalize()}: acc, acc_norm (chars), acc_bytes",
    settings=("shots", "fewshot_seed", "split"), files=make_files(subset), run=make_run(subset),
    headline=("acc", "higher"),
    details=("acc_norm", "acc_bytes", "questions", "truncated_questions", "shots"))
    for subset in ("easy", "challenge")]
