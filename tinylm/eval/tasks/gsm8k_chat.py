"""gsm8k_chat: an instruct metric a tiny model can move, on GSM8K test (Cobbe et al. 2021) in
ChatML.

A 1M-parameter model solves no grade-school maths, so accuracy alone would read 0 for every
model of an instruct tournament. What SFT does change, and what this task measures:

- `ce_loss`: per-token cross-entropy of the reference answers (the worked solution plus the
  closing `<|im_end|>`) after the prompt `<|im_start|>user\\n{question}<|im_end|>\\n
  <|im_start|>assistant\\n`, i.e. exactly the tokens SFT trains (`chatml.segments`, encoded
  segment by segment as `tinylm sft` does). `bits_per_byte` is the same sum over UTF-8 bytes,
  comparable across tokenizers. Standard errors: delta method over questions
  (`stats.ratio_se`).
- format compliance, from a greedy answer to each of the first GENERATED questions (answer
  budget: twice the reference's tokens + 16, at most the context): `ended` = the answer
  ends its turn with `<|im_end|>`; `format` = it ended and its last line is a GSM8K answer
  line `#### N`; `acc` = that N equals the reference's. Binomial standard errors.

Which questions: `split = all` scores the whole test file (1,319); `selection` and `report`
halve it by a stable hash of the question, so a tournament chooses on one half and reports on
the other, as BLiMP's halves.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np

from tinylm.eval import stats
from tinylm.eval.tasks import Benchmark, read_jsonl

VERSION = "1"
GENERATED = 50  # questions answered greedily for the format metrics (decoding is the cost)
ANSWER_LINE = re.compile(r"^####\s*(-?[\d,]*\.?\d+)\s*$")


def split_of(question: str) -> str:
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "selection" if digest[0] % 2 == 0 else "report"


def load_items(data_dir: Path, split: str, limit: int | None) -> list[dict]:
    rows = read_jsonl(Path(data_dir) / "instruct" / "gsm8k" / "test.jsonl")
    for i, row in enumerate(rows):
        row["id"] = f"test_{i}"
    if split != "all":
        rows = [r for r in rows if split_of(r["question"]) == split]
    return rows[:limit] if limit is not None else rows


def final_number(answer: str) -> str | None:
    """N of the answer's last line `#### N` (commas dropped), or None."""
    lines = answer.strip().splitlines()
    match = ANSWER_LINE.match(lines[-1].strip()) if lines else None
    return match.group(1).replace(",", "") if match else None


def _prompt(question: str) -> str:
    from tinylm.infer import chatml

    return chatml.render([{"role": "user", "content": question}])


def greedy_answer(scorer, prompt_ids: list[int], budget: int) -> tuple[str, bool]:
    """Greedy decoding until `<|im_end|>` (or EOS, or the budget): (answer, ended)."""
    import torch

    from tinylm.infer.generate import decode_batch
    from tinylm.infer.sampling import SamplingConfig
    from tinylm.instruct.chat import TurnStream

    stream = TurnStream(scorer.tokenizer, lambda text: None)
    with torch.inference_mode():
        decode_batch(scorer.model, [prompt_ids], budget, SamplingConfig(temperature=0.0),
                     eos_id=scorer.tokenizer.eos_id, on_token=lambda row, t: stream.push(t))
    return stream.finish(), stream.ended


def run(scorer, settings, limit: int | None, data_dir: Path) -> dict:
    from tinylm.infer.chatml import IM_END

    items = load_items(data_dir, settings.split, limit)
    encode = scorer.tokenizer.encode
    pairs = [(encode(_prompt(item["question"])), encode(item["answer"] + IM_END))
             for item in items]
    logprob, _, truncated = scorer.loglikelihood_tokens(pairs, need_greedy=False)
    n_tokens = np.array([len(c) for _, c in pairs], dtype=float)
    n_bytes = np.array([len((item["answer"] + IM_END).encode()) for item in items], dtype=float)
    nll = -np.asarray(logprob, dtype=float)
    ended, formatted, correct = [], [], []
    context = int(scorer.context_len)
    for item, (prompt_ids, answer_ids) in list(zip(items, pairs))[:GENERATED]:
        answer, did_end = greedy_answer(scorer, prompt_ids,
                                        min(context, 2 * len(answer_ids) + 16))
        number = final_number(answer) if did_end else None
        ended.append(did_end)
        formatted.append(number is not None)
        correct.append(number is not None and number == final_number(item["answer"]))
    out = {"ce_loss": float(nll.sum() / n_tokens.sum()),
           "ce_loss_se": stats.ratio_se(nll, n_tokens),
           "bits_per_byte": float(nll.sum() / n_bytes.sum() / math.log(2)),
           "bits_per_byte_se": (None if stats.ratio_se(nll, n_bytes) is None else
                                stats.ratio_se(nll, n_bytes) / math.log(2)),
           "questions": len(items), "answer_tokens": int(n_tokens.sum()),
           "truncated_questions": int(truncated.sum()), "generated": len(ended),
           "split": settings.split}
    for name, hits in (("ended", ended), ("format", formatted), ("acc", correct)):
        out[name] = float(np.mean(hits)) if hits else 0.0
        out[f"{name}_se"] = stats.mean_se(hits) if hits else None
    out["items"] = {"ids": [item["id"] for item in items[:GENERATED]],
                    **{k: "".join("01"[int(h)] for h in v) for k, v in
                       (("ended", ended), ("format", formatted), ("acc", correct))}}
    return out


def files(data_dir: Path) -> list[Path]:
    return [Path(data_dir) / "instruct" / "gsm8k" / "test.jsonl"]


BENCHMARKS = [Benchmark(
    name="gsm8k_chat", version=VERSION,
    description="GSM8K test in ChatML: reference-answer CE per token, <|im_end|> and #### N "
                "format compliance of greedy answers",
    settings=("split",), files=files, run=run, headline=("ce_loss", "lower"),
    details=("bits_per_byte", "ended", "format", "acc", "questions"), cost=2.0)]
