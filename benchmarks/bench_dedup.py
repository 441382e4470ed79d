"""Dedup throughput: `tinylm data dedup` (datasketch MinHash LSH) vs datatrove's MinHash
pipeline (signature -> buckets -> cluster -> filter, LocalPipelineExecutor) on the same
corpus, at 1 and 2 workers; prints rows/s, the ratio, and how far the two duplicate sets agree
(and how many of the planted duplicates each finds).

    PYTHONPATH=. python benchmarks/bench_dedup.py [--c4 400 --tinystories 1000] [--repeat 1]

The corpus is the planted-fault corpus (`tinylm.data.curate.planted`, its exact and near
duplicates included). Both sides use word 5-gram shingles; tinylm 128 permutations in 20x6
bands + a Jaccard >= 0.7 check, shingles hashed in numpy; datatrove its default 14 buckets x
8 hashes (no check) and its default xxhash64 shingle hash (given bytes: datatrove passes a
str, which the installed xxhash 4 refuses), its words split on whitespace (its English default, spaCy, is not installed here). Both timings
cover reading the rows and writing the deduplicated output; neither includes start-up.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def build_corpus(root: Path, c4: int, tinystories: int) -> tuple[Path, dict]:
    from tinylm.data.curate import planted

    record = planted.build(root, config=planted.PlantConfig(c4=c4, tinystories=tinystories))
    return root / "corpus", record


def run_tinylm(corpus: Path, out: Path, workers: int) -> tuple[float, set[str]]:
    from tinylm.data.curate.dataset import open_dataset
    from tinylm.data.curate.dedup import dedup

    dataset = open_dataset(corpus)
    start = time.perf_counter()
    dedup(dataset, out, workers=workers, force=True)
    seconds = time.perf_counter() - start
    kept = {row["id"] for row in open_dataset(out).iter_rows()}
    return seconds, {row["id"] for row in dataset.iter_rows()} - kept


def run_datatrove(corpus: Path, work: Path, workers: int) -> tuple[float, set[str]]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SpaceTokenizer(WordTokenizer):
        """Words split on whitespace, as tinylm's shingles: datatrove's English default
        is spaCy's tokenizer, which is not installed here (and would cost it time)."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            raise NotImplementedError

    rows = corpus / "rows"
    tasks = len(list(rows.glob("part-*.jsonl")))
    # 5-grams, 14 buckets x 8 hashes, its default xxhash64 shingle hash. datatrove calls
    # xxhash with a str, which xxhash 4 (installed here) refuses, so the str is encoded first,
    # as older xxhash did inside the call.
    import xxhash
    from datatrove.utils.hashes import xxhash as datatrove_xxhash

    datatrove_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(
        data.encode("utf-8") if isinstance(data, str) else data)
    config = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    logs = work / "logs"

    def reader():
        return JsonlReader(str(rows), glob_pattern="part-*.jsonl", id_key="id")

    stages = [
        LocalPipelineExecutor([reader(), MinhashDedupSignature(str(work / "sigs"), config,
                                                                 language=SpaceTokenizer())],
                              tasks=tasks, workers=workers, logging_dir=str(logs / "1"),
                              start_method="fork"),
        LocalPipelineExecutor([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"),
                                                   config=config)],
                              tasks=config.num_buckets, workers=workers,
                              logging_dir=str(logs / "2"), start_method="fork"),
        LocalPipelineExecutor([MinhashDedupCluster(str(work / "buckets"),
                                                   str(work / "remove"), config=config)],
                              tasks=1, workers=1, logging_dir=str(logs / "3"),
                              start_method="fork"),
        LocalPipelineExecutor([reader(), MinhashDedupFilter(
            str(work / "remove"),
            exclusion_writer=JsonlWriter(str(work / "removed"), compression=None)),
            JsonlWriter(str(work / "kept"), compression=None)],
            tasks=tasks, workers=workers, logging_dir=str(logs / "4"), start_method="fork"),
    ]
    start = time.perf_counter()
    for stage in stages:
        stage.run()
    seconds = time.perf_counter() - start
    removed = set()
    for path in (work / "removed").glob("*.jsonl"):
        with open(path, encoding="utf-8") as f:
            removed |= {json.loads(line)["id"] for line in f}
    return seconds, removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--c4", type=int, default=400)
    parser.add_argument("--tinystories", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus, record = build_corpus(root / "planted", args.c4, args.tinystories)
        rows = sum(1 for _ in open_rows(corpus))
        planted_dups = {r for r, k in record["truth"].items()
                        if k in ("exact_duplicate", "near_duplicate")}
        print(f"corpus: {rows} rows ({len(planted_dups)} planted duplicates); "
              f"machine: 2 shared cores, loaded by other jobs")
        for workers in (1, 2):
            ours = run_tinylm(corpus, root / f"ours-{workers}", workers)
            theirs = run_datatrove(corpus, root / f"dt-{workers}", workers)
            (t1, a), (t2, b) = ours, theirs
            union = a | b
            print(f"workers={workers}: tinylm {rows / t1:8.0f} rows/s ({t1:.2f} s, "
                  f"{len(a)} removed, {len(a & planted_dups)}/{len(planted_dups)} planted) | "
                  f"datatrove {rows / t2:8.0f} rows/s ({t2:.2f} s, {len(b)} removed, "
                  f"{len(b & planted_dups)}/{len(planted_dups)} planted) | "
                  f"speed ratio tinylm/datatrove {t2 / t1:.2f} | duplicate sets: "
                  f"{len(a & b)} shared, Jaccard {len(a & b) / max(1, len(union)):.3f}")


def open_rows(corpus: Path):
    from tinylm.data.curate.dataset import open_dataset

    return open_dataset(corpus).iter_rows()


if __name__ == "__main__":
    main()
