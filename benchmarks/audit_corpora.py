"""The audit's figures for each local corpus (C4 sample, FineWeb-Edu, TinyStories), each
written as a dataset with DatasetWriter and audited against the other two.

    PYTHONPATH=. python benchmarks/audit_corpora.py [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

CORPORA = ("c4", "fineweb-edu", "tinystories")


def main() -> None:
    from tinylm.data.curate.audit import audit
    from tinylm.data.curate.dataset import DatasetWriter, make_row, open_dataset
    from tinylm.data.curate.dedup import Reference
    from tinylm.data.sources import resolve_dataset

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in CORPORA:
            source = resolve_dataset(name)
            with DatasetWriter(Path(tmp) / name, name=name, author="bench",
                               card={"sources": [name]}, rows_per_part=500) as w:
                for n, text in enumerate(source.documents(), 1):
                    w.write(make_row(text, name, source.files[0].name, n))
            dataset = open_dataset(Path(tmp) / name)
            others = [Reference(o, o) for o in CORPORA if o != name]
            start = time.perf_counter()
            payload = audit(dataset, others, workers=args.workers)
            seconds = time.perf_counter() - start
            figures = dict(payload["figures"])
            print(f"== {name}: audit {'PASSED' if payload['passed'] else 'FAILED'} "
                  f"in {seconds:.1f} s ({'; '.join(payload['failures']) or 'no failures'})")
            print(json.dumps(figures, indent=None))
            for cluster in payload["findings"]["largest_clusters"][:2]:
                print(f"   cluster of {cluster['size']}: {cluster['excerpt'][:100]}")
            for kind, entry in payload["findings"]["pii"].items():
                print(f"   {kind}: {entry['rows']} rows, e.g. {entry['examples'][0]['excerpt']}")


if __name__ == "__main__":
    main()
