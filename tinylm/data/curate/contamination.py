"""Benchmark contamination: 13-gram overlap of every row with every benchmark tinylm scores.

The convention is lm-eval's (EleutherAI/lm-evaluation-harness, lm_eval/decontamination/
janitor.py and decontaminate.py, read, not copied): both sides normalised by `Janitor.
normalize_string` (ASCII lower-case, string.punctuation deleted, split on whitespace) and a row
is contaminated when it shares any word 13-gram with a benchmark document. What is indexed, from
the files `tinylm/eval/tasks/*` read:

- `wikitext-2`: the articles of wiki.test.raw (`wikitext.split_pages`), both raw and through
  lm-eval's detokenizer (`wikitext.detokenize`), so a copy in either spelling is found;
- `arc-easy`: each test and validation question (the splits tinylm scores), alone and followed
  by its correct answer (lm-eval's arc query is "Question: {q}\\nAnswer: {a}");
- `blimp`: every sentence_good and sentence_bad of the 67 paradigms.

Items shorter than 13 words -- almost every BLiMP sentence and many ARC questions -- have no
13-gram, so they are matched whole instead: a row is hit when one of its sentences (split at
. ! ? or a line break), normalised the same way, *equals* a short item of at least
`min_short_words` words (default 4; shorter items such as "Who ran?" are left out, as they
say nothing about contamination). lm-eval itself would miss these items; this is the one
addition to its convention.

The index holds stable 64-bit hashes of the n-grams (about 0.4 M, 5 MB), cached on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinylm.data.curate.dataset import Dataset, DatasetWriter, write_check
from tinylm.data.curate.settings import ContaminationConfig
from tinylm.data.curate.textnorm import (
    _python_ngram_hash,
    lm_eval_words,
    ngram_hashes,
    sentences,
)
from tinylm.errors import TinyLMError
from tinylm.io import (
    canonical_sha256,
    default_cache_dir,
    sha256_file,
    write_bytes_atomic,
    write_text_atomic,
)

BENCHMARKS = ("wikitext-2", "arc-easy", "blimp")
ARC_SPLITS = ("test", "validation")
INDEX_VERSION = 1


# ------------------------------------------------------------------------ benchmark index

class BenchmarkIndex:
    """Hashes of every benchmark 13-gram (and of every whole short item), sorted, each with
    the number of the item it came from; `hits` looks a row's n-grams up in one searchsorted.

    A hash is `textnorm.ngram_hashes`: a stable 64-bit polynomial over per-word blake2b ids,
    so the index can be cached on disk (keyed by the benchmark files' sha256) and a worker
    process loads it instead of re-reading 67 BLiMP files."""

    def __init__(self, items: list[tuple[str, str]], keys: np.ndarray, item_of: np.ndarray,
                 config: ContaminationConfig):
        self.items, self.keys, self.item_of, self.config = items, keys, item_of, config
        self.sizes = dict.fromkeys(BENCHMARKS, 0)
        for benchmark, _ in items:
            self.sizes[benchmark] += 1

    @classmethod
    def build(cls, data_dir: Path, config: ContaminationConfig) -> BenchmarkIndex:
        items, keys, item_of, short_keys, short_items = [], [], [], [], []
        for benchmark, text in benchmark_items(Path(data_dir)):
            words = lm_eval_words(text)
            if len(words) >= config.ngram:
                hashes = ngram_hashes(words, config.ngram)
            elif len(words) >= config.min_short_words:
                hashes = [_python_ngram_hash(words)]
            else:
                continue
            if isinstance(hashes, list):
                short_keys.extend(hashes)
                short_items.extend([len(items)] * len(hashes))
            else:
                keys.append(hashes)
                item_of.append(np.full(len(hashes), len(items), dtype=np.int32))
            items.append((benchmark, text))
        keys.append(np.array(short_keys, dtype=np.uint64))
        item_of.append(np.array(short_items, dtype=np.int32))
        keys, item_of = np.concatenate(keys), np.concatenate(item_of)
        order = np.argsort(keys, kind="stable")
        return cls(items, keys[order], item_of[order], config)

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Per hash, the item it belongs to, or -1."""
        if len(hashes) == 0:
            return np.zeros(0, dtype=np.int32)
        pos = np.minimum(np.searchsorted(self.keys, hashes), len(self.keys) - 1)
        return np.where(self.keys[pos] == hashes, self.item_of[pos], -1)

    def short_item(self, key: int) -> int:
        pos = int(np.searchsorted(self.keys, np.uint64(key)))
        if pos < len(self.keys) and int(self.keys[pos]) == key:
            return int(self.item_of[pos])
        return -1

    def hits(self, text: str) -> list[dict]:
        """Each benchmark item this text overlaps, with the first matching n-gram."""
        n = self.config.ngram
        found: dict[int, str] = {}
        words = lm_eval_words(text)
        items = self.lookup(ngram_hashes(words, n))
        for i in np.flatnonzero(items >= 0):
            found.setdefault(int(items[i]), " ".join(words[i:i + n]))
        for sentence in sentences(text):
            words = lm_eval_words(sentence)
            if self.config.min_short_words <= len(words) < n:
                item = self.short_item(_python_ngram_hash(words))
                if item >= 0:
                    found.setdefault(item, " ".join(words))
        return [{"benchmark": self.items[i][0], "item": i, "match": gram,
                 "item_text": self.items[i][1][:200]} for i, gram in found.items()]

    # The on-disk cache: the arrays in one .npz (no pickle), the item texts in JSON.
    def save(self, path: Path) -> None:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, keys=self.keys, item_of=self.item_of)
        write_bytes_atomic(path.with_suffix(".npz"), buffer.getvalue())
        write_text_atomic(path.with_suffix(".json"), json.dumps(
            {"format": "tinylm-contamination-index", "items": self.items}))

    @classmethod
    def load(cls, path: Path, config: ContaminationConfig) -> BenchmarkIndex | None:
        """The cached index, or None when it is missing, damaged or inconsistent (then the
        caller rebuilds it)."""
        import zipfile

        try:
            with np.load(path.with_suffix(".npz"), allow_pickle=False) as arrays:
                keys, item_of = arrays["keys"], arrays["item_of"]
            record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            items = [tuple(i) for i in record["items"]]
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            return None
        if keys.dtype != np.uint64 or keys.shape != item_of.shape or not items or \
                (len(item_of) and int(item_of.max()) >= len(items)):
            return None
        return cls(items, keys, item_of, config)


def benchmark_files(data_dir: Path) -> list[Path]:
    from tinylm.eval.tasks import wikitext

    test = data_dir / wikitext.TEST_FILE
    arc = [data_dir / "arc-easy" / f"ARC-Easy-{split}.jsonl" for split in ARC_SPLITS]
    blimp = sorted((data_dir / "blimp").glob("*.jsonl"))
    missing = [str(p) for p in [test, *arc] if not p.is_file()] + \
        ([] if blimp else [str(data_dir / "blimp" / "*.jsonl")])
    if missing:
        raise TinyLMError(f"benchmark file(s) for the contamination check not found: "
                          f"{', '.join(missing)} (data dir {data_dir}; pass --data-dir)")
    return [test, *arc, *blimp]


def benchmark_items(data_dir: Path):
    """(benchmark, text) for every scored item, read as tinylm's eval tasks read them."""
    from tinylm.eval.tasks import read_jsonl, wikitext
    from tinylm.eval.tasks.arc import answer_index

    test, *rest = benchmark_files(data_dir)
    arc, blimp = rest[:len(ARC_SPLITS)], rest[len(ARC_SPLITS):]
    for page in wikitext.split_pages(test.read_text(encoding="utf-8")):
        yield "wikitext-2", page
        yield "wikitext-2", wikitext.detokenize(page)
    for path in arc:
        for item in read_jsonl(path):
            question = item["question"]
            yield "arc-easy", question
            yield "arc-easy", f"{question} {item['choices']['text'][answer_index(item)]}"
    for path in blimp:
        for pair in read_jsonl(path):
            yield "blimp", pair["sentence_good"]
            yield "blimp", pair["sentence_bad"]


_INDEXES: dict[tuple, BenchmarkIndex] = {}


def benchmark_index(data_dir=None, config: ContaminationConfig = ContaminationConfig()
                    ) -> BenchmarkIndex:
    """The index for a data dir: once per process, from the disk cache when the benchmark
    files and settings are the same as when it was built."""
    from tinylm.data.sources import resolve_data_dir

    folder = resolve_data_dir(data_dir)
    key = (str(folder), config)
    if key not in _INDEXES:
        files = sorted(str(p) for p in benchmark_files(folder))
        stamp = canonical_sha256({"files": {f: sha256_file(f, remember=True) for f in files},
                                  "config": [config.ngram, config.min_short_words],
                                  "version": INDEX_VERSION})
        path = default_cache_dir("contamination") / f"index-{stamp[:24]}"
        index = BenchmarkIndex.load(path, config)
        if index is None:
            index = BenchmarkIndex.build(folder, config)
            try:
                index.save(path)
            except OSError:
                pass  # an unwritable cache only costs the next run a rebuild
        _INDEXES[key] = index
    return _INDEXES[key]


# ------------------------------------------------------------------------------ datasets

def summarize(hits_by_row: dict[str, list[dict]], examples: int = 5) -> dict:
    by_benchmark = {b: {"rows": 0, "examples": []} for b in BENCHMARKS}
    for row_id, hits in hits_by_row.items():
        for benchmark in sorted({h["benchmark"] for h in hits}):
            entry = by_benchmark[benchmark]
            entry["rows"] += 1
            if len(entry["examples"]) < examples:
                hit = next(h for h in hits if h["benchmark"] == benchmark)
                entry["examples"].append({"row": row_id, "match": hit["match"],
                                          "item": hit["item_text"]})
    return {"hits": len(hits_by_row), "by_benchmark": by_benchmark,
            "rows_hit": sorted(hits_by_row)}


def scan(dataset: Dataset, data_dir=None, config: ContaminationConfig = ContaminationConfig()
         ) -> dict[str, list[dict]]:
    index = benchmark_index(data_dir, config)
    out = {}
    for row in dataset.iter_rows():
        hits = index.hits(row["text"])
        if hits:
            out[row["id"]] = hits
    return out


def check_dataset(dataset: Dataset | str | Path, data_dir=None,
                  config: ContaminationConfig = ContaminationConfig()) -> dict:
    """Scan every row, store checks/contamination.json on these bytes, return its payload:
    {"hits": rows hit, "by_benchmark": {name: {"rows", "examples"}}, "rows_hit": [...]}.
    `dataset` may be an open Dataset or its folder (then verified against its manifest)."""
    if not isinstance(dataset, Dataset):
        from tinylm.data.curate.dataset import open_dataset

        dataset = open_dataset(dataset)
    payload = {**summarize(scan(dataset, data_dir, config)), "ngram": config.ngram,
               "min_short_words": config.min_short_words, "rows": dataset.row_count()}
    write_check(dataset, "contamination", payload)
    return payload


def decontaminate(dataset: Dataset, out: Path, data_dir=None, force: bool = False,
                  config: ContaminationConfig = ContaminationConfig()) -> dict:
    """Write `out`: the rows of `dataset` with no hit (a hit row is dropped whole; lm-eval's
    Janitor cuts a window around the n-gram instead, which leaves fragments of documents).
    Returns the report, also stored on `out` as checks/contamination.json (zero hits)."""
    hits = scan(dataset, data_dir, config)
    report = summarize(hits)
    step = {"step": "decontaminate", "from": dataset.manifest_sha256, "ngram": config.ngram,
            "removed": len(hits), "by_benchmark": {b: v["rows"] for b, v in
                                                   report["by_benchmark"].items()}}
    info = dataset.info
    with DatasetWriter(out, name=info.get("name", dataset.name), author=info.get("author"),
                       card=info.get("card"), sources=info.get("sources"),
                       history=[*info.get("history", []), step], force=force) as writer:
        for row in dataset.iter_rows():
            if row["id"] not in hits:
                writer.write(row)
    from tinylm.data.curate.dataset import open_dataset

    # The kept rows are exactly those without a hit, so the clean dataset's check is known.
    write_check(open_dataset(out), "contamination",
                {"hits": 0, "by_benchmark": {b: {"rows": 0, "examples": []} for b in BENCHMARKS},
                 "rows_hit": [], "ngram": config.ngram,
                 "min_short_words": config.min_short_words, "rows": writer.rows})
    return {**report, "kept": writer.rows, "out": str(out)}


def report_json(report: dict) -> str:
    return json.dumps(report, indent=1, ensure_ascii=False)
