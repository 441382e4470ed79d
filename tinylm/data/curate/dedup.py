"""Exact and near-duplicate rows, and clones of other corpora (`tinylm data dedup`).

Exact: two rows are the same when their `textnorm.dedup_text` (NFKC, case folded, Unicode
punctuation and symbols deleted, whitespace collapsed) is equal; a 16-byte blake2b of it is
kept per distinct row. Near: MinHash (datasketch, Broder 1997; its 64-bit scheme) over word
5-gram shingles of the same normalised text, each shingle hashed to 64 bits in numpy
(`shingle_hashes`), with datasketch's MinHashLSH (Leskovec, Rajaraman & Ullman, "Mining of
Massive Datasets" ch. 3) to find candidates. The bands are chosen by datasketch for the
Jaccard `threshold` with false negatives weighted `recall_weight` (0.9: at 128 permutations
that is 20 bands of 6 rows, so a pair at Jaccard 0.85 is a candidate with p > 0.9999), and
each candidate is then kept only when its MinHash estimate of the Jaccard similarity is at
least `threshold`. Rows are taken in dataset order and the first row of a cluster is its
representative: a later row joins the cluster of the first earlier row it matches, and only
representatives enter the index, so clusters never chain (A~B, B~C, A!~C).

Clones: every row is also looked up in the same two indexes built over each `--against`
corpus (a dataset folder, a named local corpus, or a .txt/.jsonl file): a row that is an exact
or near copy of one of its documents is a clone of that corpus.

Memory: one 16-byte key per distinct row, one 128 x 8-byte signature per representative, and
the LSH tables: linear in the number of distinct rows (the MinHash index), everything else
streams part by part. The signatures, the expensive part, are computed in a process pool over
parts (`parallel.map_parts`); the index is queried and filled in the parent, in order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tinylm.data.curate.dataset import Dataset, DatasetWriter, open_dataset, write_check
from tinylm.data.curate.parallel import map_parts
from tinylm.data.curate.settings import DedupConfig
from tinylm.data.curate.textnorm import (
    _python_ngram_hash,
    dedup_key,
    dedup_text,
    ngram_hashes,
)
from tinylm.errors import TinyLMError

# ------------------------------------------------------------------------------ signatures

_PERMUTATIONS: dict[tuple, tuple] = {}
# datasketch's 64-bit scheme: the shingles arrive already hashed to 64 bits (below), and
# datasketch mixes them (fmix64) and applies its num_perm affine permutations.
SCHEME = "affine64"


def _permutations(config: DedupConfig) -> tuple:
    """datasketch's permutations and hashing scheme for (num_perm, seed), made once."""
    key = (config.num_perm, config.seed)
    if key not in _PERMUTATIONS:
        from datasketch import MinHash

        template = MinHash(config.num_perm, config.seed, scheme=SCHEME, hashfunc=_given)
        _PERMUTATIONS[key] = (template.permutations, template.scheme)
    return _PERMUTATIONS[key]


def _given(value: int) -> int:
    return value


def shingle_hashes(normalised: str, n: int) -> list[int]:
    """64-bit hashes of the word n-gram shingles (`textnorm.ngram_hashes`: stable, numpy);
    a row of fewer than n words is one shingle, itself. Hashing in numpy instead of
    datasketch's default per-shingle sha1 is most of the dedup's speed."""
    words = normalised.split(" ")
    if len(words) < n:
        return [_python_ngram_hash(words)]
    return ngram_hashes(words, n).tolist()


def signature(text: str, config: DedupConfig, normalised: str | None = None) -> np.ndarray:
    """The MinHash hash values of the row's shingles (uint64, num_perm of them)."""
    from datasketch import MinHash

    permutations, scheme = _permutations(config)
    minhash = MinHash(config.num_perm, config.seed, permutations=permutations, scheme=scheme,
                      hashfunc=_given)
    normalised = dedup_text(text) if normalised is None else normalised
    minhash.update_batch(shingle_hashes(normalised, config.shingle_words))
    return minhash.hashvalues


def row_keys(text: str, config: DedupConfig) -> tuple[bytes, np.ndarray]:
    normalised = dedup_text(text)
    return dedup_key(text, normalised), signature(text, config, normalised)


# ------------------------------------------------------------------------------ the index

class NearDupIndex:
    """Exact keys and MinHash LSH over representatives; `match` says what a row duplicates."""

    def __init__(self, config: DedupConfig):
        from datasketch import MinHashLSH

        self.config = config
        self.exact: dict[bytes, str] = {}
        self.signatures: dict[str, np.ndarray] = {}
        weights = (1.0 - config.recall_weight, config.recall_weight)
        self.lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm,
                              weights=weights)

    def match(self, key: bytes, sig: np.ndarray) -> tuple[str, str, float] | None:
        """("exact" | "near", the representative's id, estimated Jaccard) or None."""
        if key in self.exact:
            return "exact", self.exact[key], 1.0
        best = None
        for other in self.lsh.query(self._lean(sig)):
            jaccard = float(np.mean(self.signatures[other] == sig))
            if jaccard >= self.config.threshold and (best is None or jaccard > best[2]):
                best = ("near", other, jaccard)
        return best

    def _lean(self, sig: np.ndarray):
        from datasketch import LeanMinHash

        scheme = _permutations(self.config)[1]
        return LeanMinHash(seed=self.config.seed, hashvalues=sig, scheme=scheme)

    def add(self, row_id: str, key: bytes, sig: np.ndarray) -> None:
        self.exact.setdefault(key, row_id)
        if row_id not in self.signatures:
            self.signatures[row_id] = sig
            self.lsh.insert(row_id, self._lean(sig))


# ------------------------------------------------------------------------- other corpora

@dataclass
class Reference:
    """Another corpus rows are compared with: a name and where its documents come from."""
    name: str
    spec: str

    def documents(self, data_dir=None):
        """(document id, text) pairs, streamed."""
        from tinylm.data.curate.dataset import is_dataset

        if is_dataset(Path(self.spec)):
            for row in open_dataset(self.spec).iter_rows():
                yield row["id"], row["text"]
            return
        from tinylm.data.sources import resolve_dataset

        for n, text in enumerate(resolve_dataset(self.spec, data_dir).documents(), 1):
            yield f"{self.name}:{n}", text


def parse_references(specs: list[str] | None, flag: str = "--against") -> list[Reference]:
    """NAME=PATH (a dataset folder, a named local corpus, a .txt/.jsonl file) or a bare
    named corpus (`c4`), checked before any work starts."""
    from tinylm.data.curate.dataset import is_dataset
    from tinylm.data.sources import SOURCES

    out = []
    for spec in specs or []:
        name, sep, where = spec.partition("=")
        if not sep:
            where = name
        if not name or not where:
            raise TinyLMError(f"{flag} {spec!r}: give NAME=PATH or a named corpus")
        path = Path(where)
        if not (where in SOURCES or is_dataset(path) or where.startswith("hf:") or
                (path.is_file() and path.suffix in (".txt", ".jsonl", ".gz"))):
            raise TinyLMError(f"{flag} {spec!r}: {where} is not a dataset folder, a named "
                              f"corpus ({', '.join(sorted(SOURCES))}) or a .txt/.jsonl file")
        if any(r.name == name for r in out):
            raise TinyLMError(f"{flag}: the name {name!r} is given twice")
        out.append(Reference(name, where))
    return out


def _reference_keys(item: tuple[str, str, DedupConfig]):
    doc_id, text, config = item
    return doc_id, *row_keys(text, config)


def build_reference_index(reference: Reference, config: DedupConfig, workers: int = 1,
                          data_dir=None) -> NearDupIndex:
    index = NearDupIndex(config)
    docs = ((doc_id, text, config) for doc_id, text in reference.documents(data_dir))
    for doc_id, key, sig in _batched_keys(docs, workers):
        index.add(doc_id, key, sig)
    return index


def _keys_of_batch(batch):
    return [_reference_keys(item) for item in batch]


def _batched_keys(docs, workers: int, size: int = 256):
    def batches():
        batch = []
        for item in docs:
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch
    for result in map_parts(_keys_of_batch, batches(), workers):
        yield from result


# ------------------------------------------------------------------------------ the scan

class DedupScan:
    """Feeds rows (in order) through the dataset's own index and each reference index, and
    keeps the findings: per row what it duplicates or clones, and the clusters."""

    def __init__(self, config: DedupConfig, references: dict[str, NearDupIndex] | None = None,
                 private: dict[str, NearDupIndex] | None = None):
        self.config = config
        self.own = NearDupIndex(config)
        self.references = references or {}
        self.private = private or {}
        self.rows = 0
        self.exact_rows = 0
        self.near_rows = 0
        self.duplicate_of: dict[str, tuple[str, str, float]] = {}
        self.clusters: dict[str, dict] = {}            # representative -> size, members
        self.clones: dict[str, list[dict]] = {name: [] for name in self.references}
        self.private_rows: dict[str, list[dict]] = {name: [] for name in self.private}

    def add(self, row_id: str, source: str, text: str, key: bytes, sig: np.ndarray) -> dict:
        """What this row is: {"duplicate": (kind, of, J) | None, "clone": [...],
        "private": [...]}; also updates the counts and the index."""
        self.rows += 1
        found = self.own.match(key, sig)
        if found is None:
            self.own.add(row_id, key, sig)
        else:
            kind, rep, jaccard = found
            self.duplicate_of[row_id] = found
            if kind == "exact":
                self.exact_rows += 1
            else:
                self.near_rows += 1
            cluster = self.clusters.setdefault(rep, {"exact": 0, "near": 0, "members": []})
            cluster[kind] += 1
            if len(cluster["members"]) < 3:
                cluster["members"].append({"id": row_id, "kind": kind,
                                           "jaccard": round(jaccard, 3),
                                           "excerpt": excerpt(text)})
        clones = self._matches(self.references, key, sig, row_id, source, self.clones)
        private = self._matches(self.private, key, sig, row_id, source, self.private_rows)
        return {"duplicate": found, "clone": clones, "private": private}

    @staticmethod
    def _matches(indexes, key, sig, row_id, source, sink) -> list[dict]:
        out = []
        for name, index in indexes.items():
            found = index.match(key, sig)
            if found is not None:
                kind, doc, jaccard = found
                hit = {"row": row_id, "source": source, "corpus": name, "document": doc,
                       "kind": kind, "jaccard": round(jaccard, 3)}
                sink[name].append(hit)
                out.append(hit)
        return out

    def report(self) -> dict:
        """Figures, and the largest clusters with examples (their first row's excerpt is
        filled in by the caller, which streams the rows again)."""
        rows = max(self.rows, 1)
        biggest = sorted(self.clusters.items(), key=lambda kv: -(kv[1]["exact"] +
                                                                 kv[1]["near"]))
        clusters = [{"representative": rep,
                     "excerpt": "",
                     "size": 1 + c["exact"] + c["near"], "exact": c["exact"],
                     "near": c["near"], "members": c["members"]}
                    for rep, c in biggest[:self.config.examples]]
        return {
            "rows": self.rows, "exact_duplicate_rows": self.exact_rows,
            "near_duplicate_rows": self.near_rows,
            "exact_duplicate_rate": self.exact_rows / rows,
            "near_duplicate_rate": self.near_rows / rows,
            "clusters": len(self.clusters), "largest_clusters": clusters,
            "clone_rows": {name: len(v) for name, v in self.clones.items()},
            "clone_examples": {name: v[:self.config.examples] for name, v in
                               self.clones.items()},
            "private_rows": {name: len(v) for name, v in self.private_rows.items()},
            "private_examples": {name: v[:self.config.examples] for name, v in
                                 self.private_rows.items()},
            "settings": asdict(self.config),
        }


def fill_cluster_excerpts(rows, clusters: list[dict]):
    """Pass `rows` through, setting each listed cluster's excerpt from its first row."""
    by_id = {c["representative"]: c for c in clusters}
    for row in rows:
        if row["id"] in by_id:
            by_id[row["id"]]["excerpt"] = excerpt(row["text"])
        yield row


def excerpt(text: str, size: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[:size] + "..."


# ------------------------------------------------------------------------------ the command

def _part_keys(item: tuple[Path, DedupConfig]) -> list[tuple]:
    part, config = item
    from tinylm.data.curate.dataset import iter_part

    return [(row["id"], row.get("source", ""), row["text"], *row_keys(row["text"], config))
            for row in iter_part(part)]


def dedup(dataset: Dataset, out: Path, references: list[Reference] | None = None,
          config: DedupConfig = DedupConfig(), workers: int = 1, force: bool = False,
          data_dir=None) -> dict:
    """Write `out`: the rows of `dataset` that are neither a duplicate of an earlier row nor
    a clone of a reference corpus (the first row of each cluster is kept); return the report
    (also stored as checks/dedup.json on both datasets)."""
    scan = DedupScan(config, {r.name: build_reference_index(r, config, workers, data_dir)
                              for r in references or []})
    info = dataset.info
    step = {"step": "dedup", "from": dataset.manifest_sha256, "settings": asdict(config),
            "against": {r.name: r.spec for r in references or []}}
    dropped: set[str] = set()
    for part_rows in map_parts(_part_keys, ((part, config) for part in dataset.parts), workers):
        for row_id, source, text, key, sig in part_rows:
            found = scan.add(row_id, source, text, key, sig)
            if found["duplicate"] is not None or found["clone"]:
                dropped.add(row_id)
    step["removed"] = len(dropped)
    report = scan.report()
    # Rows are copied unchanged in a second streaming pass, so the workers never ship whole
    # rows back; the pass also picks up the excerpts of the listed clusters' first rows.
    with DatasetWriter(out, name=info.get("name", dataset.name), author=info.get("author"),
                       card=info.get("card"), sources=info.get("sources"),
                       history=[*info.get("history", []), step], force=force) as writer:
        for row in fill_cluster_excerpts(dataset.iter_rows(), report["largest_clusters"]):
            if row["id"] not in dropped:
                writer.write(row)
    report["kept"] = writer.rows
    write_check(dataset, "dedup", report)
    write_check(open_dataset(out), "dedup", {**report, "of": dataset.manifest_sha256})
    return report
