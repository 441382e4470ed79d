"""The planted-fault benchmark: build the corpus (`tinylm.data.curate.planted`), audit it, and
print recall per planted fault kind and false positives on the clean rows.

    PYTHONPATH=. python benchmarks/plant_faults.py [--c4 400 --tinystories 1000 --workers 2]

The test (tests/data/curate/test_planted_audit.py) asserts the same on a smaller corpus.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    from tinylm.data.curate import planted
    from tinylm.data.curate.audit import audit
    from tinylm.data.curate.dataset import open_dataset
    from tinylm.data.curate.dedup import Reference
    from tinylm.data.curate.textnorm import dedup_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--c4", type=int, default=400)
    parser.add_argument("--tinystories", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        record = planted.build(root, config=planted.PlantConfig(c4=args.c4,
                                                                tinystories=args.tinystories))
        dataset = open_dataset(root / "corpus")
        start = time.perf_counter()
        payload = audit(dataset, [Reference(planted.CLONE_CORPUS, planted.CLONE_CORPUS)],
                        [Reference(planted.PRIVATE_NAME, str(root / "private"))],
                        workers=args.workers)
        seconds = time.perf_counter() - start
        texts = {row["id"]: row["text"] for row in dataset.iter_rows()}

        def verify(row_id, of, kind):
            if kind == "exact":
                return dedup_text(texts[row_id]) == dedup_text(texts[of])
            return planted.jaccard(texts[row_id], texts[of]) >= 0.7

        result = planted.score(record, payload, verify)
    rows = payload["figures"]["rows"]
    print(f"{rows} rows ({result['clean_rows']} clean), audit {seconds:.1f} s at "
          f"{args.workers} workers ({rows / seconds:.0f} rows/s; shared, loaded machine)")
    print(f"{'fault kind':<28}{'planted':>8}{'found':>7}{'recall':>8}")
    for kind, entry in result["recall"].items():
        flag = "" if kind in planted.REQUIRED else "   (statistical; not required)"
        print(f"{kind:<28}{entry['planted']:>8}{entry['found']:>7}{entry['recall']:>8.0%}"
              f"{flag}")
    print("false positives on clean rows, per detector: " +
          ", ".join(f"{k} {v}" for k, v in result["false_positives"].items()))
    print(f"false-positive rows {result['false_positive_rows']} / {result['clean_rows']} = "
          f"{result['false_positive_rate']:.2%}; natural (verified) duplicates among clean "
          f"rows {result['natural_duplicates']}; clean rows with a real email/phone "
          f"{result['natural_pii_rows']}")


if __name__ == "__main__":
    main()
