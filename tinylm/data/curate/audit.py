"""`tinylm data audit`: every detector over a dataset, figures checked against thresholds.

"Is this what its card says it is?" Rows per claimed source; exact and near-duplicate rates and
the largest clusters; rows that clone another named corpus (`--against`) and rows of a private
set (`--private`); benchmark contamination (13-gram, `contamination.py`); PII and secrets
(`pii.py`); rows whose claimed source does not match their content (`mismatch.py`); and the
card's own claims (row count, sources) next to what is there.

How it runs: the dataset is verified against its manifest, then read twice, part by part, in a
process pool (`parallel.map_parts`): pass 1 sums the per-source character profiles, pass 2
computes each row's dedup key and MinHash signature, contamination hits, PII/secret findings
and profile flag. The parent feeds the signatures through the MinHash index in row order
(`dedup.DedupScan`). Memory is constant apart from that index (and the lists of flagged row
ids kept for the report, capped at `max_listed` per finding kind).

The result is stored with `write_check(dataset, "audit", {"passed", "thresholds", "figures",
"findings"})` as checks/audit.json, and as checks/audit.html (`report_html.py`): both bound
to the manifest hash, so any change to the data voids them.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from pathlib import Path

from tinylm.data.curate import parallel
from tinylm.data.curate.contamination import (
    BENCHMARKS,
    benchmark_index,
)
from tinylm.data.curate.dataset import Dataset, iter_part, write_check
from tinylm.data.curate.dedup import (
    DedupScan,
    Reference,
    build_reference_index,
    excerpt,
    fill_cluster_excerpts,
    row_keys,
)
from tinylm.data.curate.mismatch import (
    SourceProfiles,
    merge_sums,
    profile_sums,
)
from tinylm.data.curate.pii import is_secret, scan_text
from tinylm.data.curate.settings import AuditConfig, AuditThresholds
from tinylm.io import write_text_atomic

# ---------------------------------------------------------------------------- the workers

# Set in the parent before each pool is forked, read by the workers: (config, data_dir,
# profiles). Forked workers see it without pickling the benchmark index or the profiles.
_STATE: dict = {}


def _profile_part(part: Path) -> dict:
    return profile_sums([(row.get("source", ""), row["text"]) for row in iter_part(part)])


def _scan_part(part: Path) -> tuple[list[tuple], list[dict]]:
    config: AuditConfig = _STATE["config"]
    index = benchmark_index(_STATE["data_dir"], config.contamination)
    rows, triples = [], []
    for row in iter_part(part):
        text, source = row["text"], row.get("source", "")
        key, sig = row_keys(text, config.dedup)
        rows.append((row["id"], source, excerpt(text), key, sig, index.hits(text),
                     scan_text(text)))
        triples.append((row["id"], source, text))
    return rows, _STATE["profiles"].flags(triples)


# ---------------------------------------------------------------------------- the audit

class Findings:
    """What the parent collects from the scanned rows, beyond the dedup scan."""

    def __init__(self, config: AuditConfig):
        self.config = config
        self.rows_per_source: dict[str, int] = {}
        self.contaminated: dict[str, list] = {}          # row id -> hits
        self.pii: dict[str, dict] = {}                    # kind -> {"rows", "ids", "examples"}
        self.relabelled: list[dict] = []
        self.profile_flags: list[dict] = []

    def add(self, row_id, source, hits, pii_findings) -> None:
        self.rows_per_source[source] = self.rows_per_source.get(source, 0) + 1
        if hits:
            self.contaminated[row_id] = hits
        for kind in sorted({f["kind"] for f in pii_findings}):
            entry = self.pii.setdefault(kind, {"rows": 0, "ids": [], "examples": []})
            entry["rows"] += 1
            if len(entry["ids"]) < self.config.max_listed:
                entry["ids"].append(row_id)
            if len(entry["examples"]) < self.config.examples:
                first = next(f for f in pii_findings if f["kind"] == kind)
                entry["examples"].append({"row": row_id, "excerpt": first["excerpt"]})

    def add_clones(self, row_id, source, clones) -> None:
        for hit in clones:
            if hit["corpus"] != source:
                self.relabelled.append({"row": row_id, "claimed": source,
                                        "copied_from": hit["corpus"],
                                        "document": hit["document"]})


def audit(dataset: Dataset, against: list[Reference] | None = None,
          private: list[Reference] | None = None, config: AuditConfig = AuditConfig(),
          workers: int = 1, data_dir=None, html: bool = True) -> dict:
    """Run every detector over `dataset`; store and return the audit check's payload."""
    dataset.verify()
    parallel.check_workers(workers)
    benchmark_index(data_dir, config.contamination)  # built once, before the pools fork
    scan = DedupScan(config.dedup,
                     {r.name: build_reference_index(r, config.dedup, workers, data_dir)
                      for r in against or []},
                     {r.name: build_reference_index(r, config.dedup, workers, data_dir)
                      for r in private or []})
    sums: dict = {}
    for part_sums in parallel.map_parts(_profile_part, dataset.parts, workers):
        merge_sums(sums, part_sums)
    profiles = SourceProfiles(sums, config.profile)
    _STATE.update(config=config, data_dir=data_dir, profiles=profiles)
    found = Findings(config)
    duplicates: dict[str, list] = {"exact": [], "near": []}
    for rows, flags in parallel.map_parts(_scan_part, dataset.parts, workers):
        for row_id, source, text_excerpt, key, sig, hits, pii_findings in rows:
            result = scan.add(row_id, source, text_excerpt, key, sig)
            if result["duplicate"] is not None:
                kind, of, jaccard = result["duplicate"]
                if len(duplicates[kind]) < config.max_listed:
                    duplicates[kind].append({"row": row_id, "of": of,
                                             "jaccard": round(jaccard, 3)})
            found.add(row_id, source, hits, pii_findings)
            found.add_clones(row_id, source, result["clone"])
        found.profile_flags.extend(flags[:config.max_listed - len(found.profile_flags)])
    _STATE.clear()
    payload = summarize(dataset, scan, found, duplicates, config, against, private,
                        profiles.names if profiles.usable else [])
    clusters = payload["findings"]["largest_clusters"]
    for _ in fill_cluster_excerpts(dataset.iter_rows(), clusters):
        pass  # one more read of the rows, only for the listed clusters' first-row excerpts
    write_check(dataset, "audit", payload)
    if html:
        from tinylm.data.curate.report_html import render

        write_text_atomic(dataset.path / "checks" / "audit.html",
                          render(dataset, payload))
    return payload


# ---------------------------------------------------------------------------- the figures

def summarize(dataset, scan, found: Findings, duplicates, config: AuditConfig, against,
              private, profiled: list[str]) -> dict:
    dedup = scan.report()
    rows = max(scan.rows, 1)
    secret_ids = sorted({i for kind, e in found.pii.items() if kind.startswith("secret")
                         for i in e["ids"]})
    pii_ids = sorted({i for kind, e in found.pii.items() if not kind.startswith("secret")
                      for i in e["ids"]})
    by_benchmark = {b: 0 for b in BENCHMARKS}
    for hits in found.contaminated.values():
        for b in {h["benchmark"] for h in hits}:
            by_benchmark[b] += 1
    figures = {
        "rows": scan.rows,
        "rows_per_source": dict(sorted(found.rows_per_source.items())),
        "exact_duplicate_rows": dedup["exact_duplicate_rows"],
        "exact_duplicate_rate": dedup["exact_duplicate_rate"],
        "near_duplicate_rows": dedup["near_duplicate_rows"],
        "near_duplicate_rate": dedup["near_duplicate_rate"],
        "duplicate_clusters": dedup["clusters"],
        "clone_rows": dedup["clone_rows"],
        "private_rows": dedup["private_rows"],
        "contaminated_rows": len(found.contaminated),
        "contaminated_rows_by_benchmark": by_benchmark,
        "pii_rows": len(pii_ids),
        "pii_row_rate": len(pii_ids) / rows,
        "pii_rows_by_kind": {k: e["rows"] for k, e in sorted(found.pii.items())
                             if not is_secret({"kind": k})},
        "secret_rows": len(secret_ids),
        "secret_rows_by_kind": {k: e["rows"] for k, e in sorted(found.pii.items())
                                if is_secret({"kind": k})},
        "relabelled_rows": len(found.relabelled),
        "profile_mismatch_rows": len(found.profile_flags),
        "profile_mismatch_rate": len(found.profile_flags) / rows,
        "profiled_sources": profiled,
    }
    failures = check_thresholds(figures, config.thresholds)
    card = card_checks(dataset, figures)
    findings = {
        "exact_duplicates": duplicates["exact"], "near_duplicates": duplicates["near"],
        "largest_clusters": dedup["largest_clusters"],
        "clones": {name: hits[:config.max_listed] for name, hits in scan.clones.items()},
        "private": {name: hits[:config.max_listed] for name, hits in
                    scan.private_rows.items()},
        "contamination": {"by_row": {r: sorted({h["benchmark"] for h in hits}) for r, hits in
                                     itertools.islice(sorted(found.contaminated.items()),
                                                      config.max_listed)},
                          "examples": _contamination_examples(found, config.examples)},
        "pii": {k: e for k, e in sorted(found.pii.items()) if not is_secret({"kind": k})},
        "secrets": {k: e for k, e in sorted(found.pii.items()) if is_secret({"kind": k})},
        "relabelled": found.relabelled[:config.max_listed],
        "profile_mismatch": found.profile_flags,
        "card": card,
    }
    return {"passed": not failures, "failures": failures,
            "thresholds": asdict(config.thresholds), "figures": figures,
            "findings": findings,
            "settings": {"dedup": asdict(config.dedup),
                         "contamination": asdict(config.contamination),
                         "profile": asdict(config.profile),
                         "against": {r.name: r.spec for r in against or []},
                         "private": {r.name: r.spec for r in private or []}}}


def _contamination_examples(found: Findings, examples: int) -> dict:
    """Up to `examples` rows per benchmark, each with its first matching n-gram."""
    out: dict[str, list] = {b: [] for b in BENCHMARKS}
    for row_id, hits in found.contaminated.items():
        for benchmark in sorted({h["benchmark"] for h in hits}):
            if len(out[benchmark]) < examples:
                hit = next(h for h in hits if h["benchmark"] == benchmark)
                out[benchmark].append({"row": row_id, "match": hit["match"],
                                       "item": hit["item_text"]})
    return out


def check_thresholds(figures: dict, limits: AuditThresholds) -> list[str]:
    checks = [
        ("exact duplicate rate", figures["exact_duplicate_rate"],
         limits.max_exact_duplicate_rate),
        ("near-duplicate rate", figures["near_duplicate_rate"],
         limits.max_near_duplicate_rate),
        ("contaminated rows", figures["contaminated_rows"], limits.max_contaminated_rows),
        ("rows with secrets", figures["secret_rows"], limits.max_secret_rows),
        ("private-set rows", sum(figures["private_rows"].values()), limits.max_private_rows),
        ("rows cloning another corpus", sum(figures["clone_rows"].values()),
         limits.max_clone_rows),
        ("relabelled rows", figures["relabelled_rows"], limits.max_relabelled_rows),
        ("rows with PII", figures["pii_row_rate"], limits.max_pii_row_rate),
        ("profile mismatch rate", figures["profile_mismatch_rate"],
         limits.max_profile_mismatch_rate),
    ]
    return [f"{name}: {value:.4g} > {limit:.4g}" for name, value, limit in checks
            if value > limit]


def card_checks(dataset: Dataset, figures: dict) -> list[dict]:
    """The card's claims that can be checked, each with what the data holds."""
    card = dataset.info.get("card") or {}
    out = []
    if "rows" in card:
        out.append({"claim": "rows", "card": card["rows"], "actual": figures["rows"],
                    "ok": card["rows"] == figures["rows"]})
    if "sources" in card:
        claimed = sorted(card["sources"]) if isinstance(card["sources"], list) else \
            card["sources"]
        actual = sorted(figures["rows_per_source"])
        out.append({"claim": "sources", "card": claimed, "actual": actual,
                    "ok": claimed == actual})
    return out
