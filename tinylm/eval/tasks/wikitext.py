"""WikiText-2 (Merity et al. 2016), raw text: cross-entropy, perplexities, bits per byte.

Which file: `wiki.test.raw` for `split = all` (as lm-eval) and `report`, `wiki.valid.raw` for
`selection`.

Follows lm-eval's `wikitext` task (lm_eval/tasks/wikitext/wikitext.yaml, preprocess_wikitext.py):
- documents are the articles of `wiki.test.raw`, split where EleutherAI's
  `wikitext_document_level` data set splits them (62 in the test split);
- the *detokenised* page is scored (`detokenize`), but words (`re.split(r"\\s+")`) and UTF-8
  bytes are counted on the *raw* page, so word_perplexity, byte_perplexity and bits_per_byte
  mean what lm-eval's do (and bits per byte compare byte and BPE models directly);
- each document is conditioned on EOS, as lm-eval conditions on its prefix token.

Where we differ, by default: windows *slide*. lm-eval's rolling windows are disjoint, so the
first token of every window sees almost no context; with a 64-256 token model that is a large
share of all tokens, and the score says more about the protocol than the model (Parameter Golf
saw 1.2244 -> 1.1925 bpb from sliding evaluation alone). We score every token exactly once, with
at least context - stride + 1 tokens of left context (stride defaults to half the context).
`--stride` equal to the context reproduces lm-eval's windows exactly.

Document mode is the default: the articles are unrelated, so whole-file mode would only add
context from the previous article; it is there for comparison with papers that score the file as
one stream. `ce_loss` (mean nats per token of the model's own tokenizer) is the number the model
cards call "Wikitext-2 CE loss" and the one the composite uses.

Per-item outputs (`items`), one entry per scored document (article) in file order: "documents"
(its number in the file), "nll" (summed over its tokens, nats), "tokens", "bytes" (of the raw
page). `ce_loss_se` and `bits_per_byte_se` are delta-method standard errors of those ratios
over documents (tinylm.eval.stats.ratio_se); None with fewer than two documents (file mode).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from tinylm.eval import stats
from tinylm.eval.tasks import Benchmark

VERSION = "1"
TEST_FILE = "wikitext-2/wiki.test.raw"
VALID_FILE = "wikitext-2/wiki.valid.raw"
SPLIT_FILES = {"all": TEST_FILE, "selection": VALID_FILE, "report": TEST_FILE}


def files(data_dir: Path, settings=None) -> list[Path]:
    return [Path(data_dir) / SPLIT_FILES[settings.split if settings is not None else "all"]]


def split_pages(text: str) -> list[str]:
    """Articles of a raw WikiText file, as `EleutherAI/wikitext_document_level` cuts them: a page
    starts at a top-level heading line (' = Title = ', once '= =' runs are collapsed to '=='),
    lines are joined with '\\n', and blank-only pages are dropped (the last page is always kept).
    """
    pages, lines = [], []
    for line in text.split("\n"):
        collapsed = line.replace("= = =", "===").replace("= =", "==").strip()
        if collapsed.startswith("= ") and collapsed.endswith(" ="):
            page = "\n".join(lines)
            if page.strip():
                pages.append(page)
            lines = []
        lines.append(line)
    pages.append("\n".join(lines))
    return pages


# lm-eval's wikitext_detokenizer, as data: (kind, pattern, replacement), applied in order.
# The second rule is lm-eval's own, a literal pattern that never matches real text; it is kept
# so that both harnesses score the same string.
_DETOKENIZE = [
    ("str", "s '", "s'"),
    ("re", r"/' [0-9]/", r"/'[0-9]/"),
    ("str", " @-@ ", "-"), ("str", " @,@ ", ","), ("str", " @.@ ", "."),
    ("str", " : ", ": "), ("str", " ; ", "; "), ("str", " . ", ". "), ("str", " ! ", "! "),
    ("str", " ? ", "? "), ("str", " , ", ", "),
    ("re", r"\(\s*([^\)]*?)\s*\)", r"(\1)"), ("re", r"\[\s*([^\]]*?)\s*\]", r"[\1]"),
    ("re", r"{\s*([^}]*?)\s*}", r"{\1}"), ("re", r"\"\s*([^\"]*?)\s*\"", r'"\1"'),
    ("re", r"'\s*([^']*?)\s*'", r"'\1'"),
    ("str", "= = = =", "===="), ("str", "= = =", "==="), ("str", "= =", "=="),
    ("str", " \u00b0 ", "\u00b0"),
    ("str", " \n", "\n"), ("str", "\n ", "\n"),
    ("str", " N ", " 1 "), ("str", " 's", "'s"),
]


def detokenize(page: str) -> str:
    """Undo WikiText's tokenisation (' @-@ ' -> '-', ' , ' -> ', ', ...) as lm-eval does."""
    for kind, pattern, replacement in _DETOKENIZE:
        page = page.replace(pattern, replacement) if kind == "str" else \
            re.sub(pattern, replacement, page)
    return page


def count_words(page: str) -> int:
    return len(re.split(r"\s+", page))


def run(scorer, settings, limit: int | None, data_dir: Path, shard=None) -> dict:
    """Scores; with a shard (i, n), the sums over articles i, i + n, ... for `merge` (in
    whole-file mode shard 0 scores the file and the others nothing)."""
    raw = files(data_dir, settings)[0].read_text(encoding="utf-8")
    pages = split_pages(raw)
    if limit is not None:
        pages = pages[:limit]
    if settings.wikitext_mode == "file":  # one stream: the file itself, or its first pages
        pages = [raw if limit is None else "\n".join(pages)]
    numbers = list(range(len(pages)))
    if shard is not None:
        pages, numbers = pages[shard[0]::shard[1]], numbers[shard[0]::shard[1]]
    texts = [detokenize(p) for p in pages] if settings.detokenize else pages
    width = scorer.context_len
    stride = min(width, settings.stride or max(1, width // 2))
    ids = scorer.encode_batch(texts)
    logprob = scorer.rolling_tokens(ids, stride) if ids else None
    part = {"nll": -float(logprob.sum()) if ids else 0.0,
            "tokens": sum(len(x) for x in ids), "bytes": sum(len(p.encode("utf-8")) for p in pages),
            "words": sum(count_words(p) for p in pages), "documents": len(pages),
            "scored_bytes": sum(len(t.encode("utf-8")) for t in texts), "window": width,
            "stride": stride,
            "items": {"documents": numbers, "nll": [-float(x) for x in logprob] if ids else [],
                      "tokens": [len(x) for x in ids],
                      "bytes": [len(p.encode("utf-8")) for p in pages]}}
    return part if shard is not None else merge([part], settings)


def merge(parts: list[dict], settings) -> dict:
    total = {key: sum(p[key] for p in parts)
             for key in ("nll", "tokens", "bytes", "words", "documents", "scored_bytes")}
    nll, ce = total["nll"], total["nll"] / total["tokens"]
    docs = _items(parts)
    bpb_se = stats.ratio_se(docs["nll"], docs["bytes"])
    return {"ce_loss": ce, "token_perplexity": math.exp(ce),
            "bits_per_byte": nll / total["bytes"] / math.log(2),
            "ce_loss_se": stats.ratio_se(docs["nll"], docs["tokens"]),
            "bits_per_byte_se": None if bpb_se is None else bpb_se / math.log(2),
            "byte_perplexity": math.exp(nll / total["bytes"]),
            "word_perplexity": math.exp(nll / total["words"]), **total,
            "mode": settings.wikitext_mode, "detokenize": settings.detokenize,
            "window": parts[0]["window"], "stride": parts[0]["stride"],
            "split": settings.split, "items": docs}


def _items(parts: list[dict]) -> dict:
    """The parts' per-document outputs joined back into file order."""
    rows = sorted(row for p in parts for row in zip(*(p["items"][k] for k in _ITEM_KEYS)))
    return {k: [row[i] for row in rows] for i, k in enumerate(_ITEM_KEYS)}


_ITEM_KEYS = ("documents", "nll", "tokens", "bytes")


BENCHMARKS = [Benchmark(
    name="wikitext2", version=VERSION,
    description="WikiText-2 raw: CE per token, byte perplexity, bits per byte",
    settings=("stride", "wikitext_mode", "detokenize", "split"), files=files, run=run,
    headline=("ce_loss", "lower"),
    details=("bits_per_byte", "byte_perplexity", "word_perplexity", "tokens", "stride"),
    shards=4, merge=merge, cost=2.5)]
