"""Helpers the tinylm_wikitext2 task config names with !function.

Detokenising and counting come from lm-eval itself, so the cross-check compares tinylm's
re-implementation against lm-eval's own code; only the cutting into articles is tinylm's (the
document-level data set cannot be downloaded here).
"""

import datasets
from lm_eval.tasks.wikitext.preprocess_wikitext import process_results as wikitext_results
from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

from tinylm.eval.tasks.wikitext import split_pages


def wikitext_pages(dataset):
    text = "".join(row["text"] for row in dataset)
    return datasets.Dataset.from_list([{"page": page} for page in split_pages(text)])


__all__ = ["wikitext_detokenizer", "wikitext_pages", "wikitext_results"]
