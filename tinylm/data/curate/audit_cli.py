"""`tinylm data dedup | decontaminate | audit`: the detectors and the audit report.

Imports stay inside the command functions, so `tinylm --help` does not load datasketch or
detect-secrets."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinylm.config import add_dataclass_flags, given_flags
from tinylm.errors import TinyLMError


def register(dsub) -> None:
    from tinylm.data.curate.settings import (AuditThresholds, ContaminationConfig, DedupConfig,
                                             ProfileConfig)

    p = dsub.add_parser("dedup", help="exact and near-duplicate rows, clones of other "
                                      "corpora; writes the deduplicated dataset")
    p.add_argument("dataset")
    p.add_argument("-o", "--out", required=True, help="the deduplicated dataset folder")
    _references(p)
    _common(p)
    add_dataclass_flags(p, DedupConfig)
    p.set_defaults(func=cmd_dedup)

    p = dsub.add_parser("decontaminate", help="13-gram overlap with every scored benchmark "
                                              "(WikiText-2 test, BLiMP, ARC-Easy); writes "
                                              "the clean dataset")
    p.add_argument("dataset")
    p.add_argument("-o", "--out", required=True, help="the clean dataset folder")
    _common(p)
    add_dataclass_flags(p, ContaminationConfig)
    p.set_defaults(func=cmd_decontaminate)

    p = dsub.add_parser("audit", help="every detector; checks/audit.json and audit.html")
    p.add_argument("dataset")
    _references(p)
    p.add_argument("--private", action="append", metavar="NAME=PATH",
                   help="a private set no row may come from (repeatable)")
    p.add_argument("--no-html", action="store_true", help="write only checks/audit.json")
    _common(p, output=False)
    for cls in (DedupConfig, ContaminationConfig, ProfileConfig, AuditThresholds):
        add_dataclass_flags(p, cls)
    p.set_defaults(func=cmd_audit)


def _references(p: argparse.ArgumentParser) -> None:
    p.add_argument("--against", action="append", metavar="NAME=PATH",
                   help="another corpus whose copies are clones: a dataset folder, a named "
                        "corpus (c4, fineweb-edu, tinystories, ...) or a .txt/.jsonl file "
                        "(repeatable)")


def _common(p: argparse.ArgumentParser, output: bool = True) -> None:
    from tinylm.data.curate.parallel import default_workers

    p.add_argument("--workers", type=int, default=default_workers(),
                   help="processes over the dataset's parts (default: CPUs, at most 8)")
    p.add_argument("--data-dir", help="where the named corpora and benchmarks are")
    if output:
        p.add_argument("--force", action="store_true", help="replace an existing dataset "
                                                            "folder of ours at -o")


def _open_input(args):
    from tinylm.data.curate.dataset import open_dataset
    from tinylm.data.curate.parallel import check_workers

    check_workers(args.workers)
    dataset = open_dataset(args.dataset)
    return dataset


def _check_out(args, dataset) -> Path:
    from tinylm.data.curate.dataset import check_dataset_output

    out = Path(args.out)
    if out.resolve() == dataset.path.resolve():
        raise TinyLMError(f"-o {out} is the input dataset; a step never edits a dataset in "
                          f"place (choose another output)")
    check_dataset_output(out, args.force)
    return out


def cmd_dedup(args) -> None:
    from tinylm.data.curate.dedup import DedupConfig, dedup, parse_references

    config = DedupConfig(**given_flags(args, DedupConfig))
    references = parse_references(args.against)
    dataset = _open_input(args)
    out = _check_out(args, dataset)
    report = dedup(dataset, out, references, config, args.workers, args.force, args.data_dir)
    print(f"{report['rows']} rows: {report['exact_duplicate_rows']} exact duplicates "
          f"({100 * report['exact_duplicate_rate']:.2f}%), {report['near_duplicate_rows']} "
          f"near duplicates ({100 * report['near_duplicate_rate']:.2f}%) in "
          f"{report['clusters']} clusters")
    for name, n in report["clone_rows"].items():
        print(f"clones of {name}: {n} rows")
    for cluster in report["largest_clusters"]:
        print(f"  cluster of {cluster['size']} from {cluster['representative']}: "
              f"{cluster['excerpt'][:80]}")
    print(f"kept {report['kept']} rows -> {out} (report: {out / 'checks' / 'dedup.json'})")


def cmd_decontaminate(args) -> None:
    from tinylm.data.curate.contamination import (
        ContaminationConfig,
        benchmark_index,
        decontaminate,
    )

    config = ContaminationConfig(**given_flags(args, ContaminationConfig))
    if config.ngram < 1 or config.min_short_words < 1:
        raise TinyLMError("--ngram and --min-short-words must be positive")
    dataset = _open_input(args)
    out = _check_out(args, dataset)
    index = benchmark_index(args.data_dir, config)
    print("benchmark items indexed: " + ", ".join(f"{b} {n}" for b, n in index.sizes.items()))
    report = decontaminate(dataset, out, args.data_dir, args.force, config)
    print(f"{report['hits']} contaminated rows removed")
    for benchmark, entry in report["by_benchmark"].items():
        print(f"  {benchmark}: {entry['rows']} rows")
        for example in entry["examples"][:3]:
            print(f"    {example['row']}: \"{example['match'][:90]}\"")
    print(f"kept {report['kept']} rows -> {out}")


def cmd_audit(args) -> None:
    from tinylm.data.curate.audit import AuditConfig, AuditThresholds, audit
    from tinylm.data.curate.contamination import ContaminationConfig
    from tinylm.data.curate.dedup import DedupConfig, parse_references
    from tinylm.data.curate.mismatch import ProfileConfig

    config = AuditConfig(dedup=DedupConfig(**given_flags(args, DedupConfig)),
                         contamination=ContaminationConfig(
                             **given_flags(args, ContaminationConfig)),
                         profile=ProfileConfig(**given_flags(args, ProfileConfig)),
                         thresholds=AuditThresholds(**given_flags(args, AuditThresholds)))
    against = parse_references(args.against)
    private = parse_references(args.private, "--private")
    dataset = _open_input(args)
    payload = audit(dataset, against, private, config, args.workers, args.data_dir,
                    html=not args.no_html)
    from tinylm.data.curate.report_html import headline

    for _, label, value in headline(payload["figures"]):
        print(f"{label:>42}: {value}")
    print("rows per source: " + ", ".join(f"{s} {n}" for s, n in
                                          payload["figures"]["rows_per_source"].items()))
    print("audit " + ("PASSED" if payload["passed"] else "FAILED: " +
                      "; ".join(payload["failures"])))
    print(f"report: {dataset.path / 'checks' / 'audit.json'}" +
          ("" if args.no_html else f", {dataset.path / 'checks' / 'audit.html'}"))
