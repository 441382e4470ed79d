"""`tinylm data ingest | filter | rank | tokenize | review | publish`: the curation pipeline
and the two-person publish gate. Imports stay inside the commands so `tinylm --help` is
instant."""

from __future__ import annotations

from pathlib import Path


def cmd_ingest(args) -> None:
    from tinylm.data.curate.ingest import IngestConfig, ingest

    config = IngestConfig(args.inputs, args.out, source=args.source, name=args.name,
                          author=args.author, text_field=args.text_field, split=args.split,
                          license=args.license, description=args.description,
                          data_dir=args.data_dir, rows_per_part=args.rows_per_part,
                          force=args.force)
    if args.author is not None:
        from tinylm.data.curate.review import check_person

        check_person(args.author, "--author")
    dataset = ingest(config)
    print(f"wrote {dataset.path}: {dataset.row_count()} rows in {len(dataset.parts)} part(s), "
          f"author {dataset.author}, manifest {dataset.manifest_sha256[:16]}")


def cmd_filter(args) -> None:
    from tinylm.data.curate.filter import FilterConfig, filter_dataset

    config = FilterConfig(args.dataset, args.out, score_column=args.score_column,
                          scorer=args.scorer, keep_top=args.keep_top, min_score=args.min_score,
                          workers=args.workers, engine=args.engine, author=args.author,
                          force=args.force)
    dataset = filter_dataset(config)
    print(f"wrote {dataset.path}: {dataset.row_count()} rows")


def cmd_rank(args) -> None:
    from tinylm.data.curate.rank import RankConfig, rank_dataset

    dataset = rank_dataset(RankConfig(args.dataset, args.out, scorer=args.scorer,
                                      buckets=args.buckets, workers=args.workers,
                                      engine=args.engine, author=args.author, force=args.force))
    print(f"wrote {dataset.path}: {dataset.row_count()} rows in curriculum order (easy first)")


def cmd_tokenize(args) -> None:
    from tinylm.data.curate.shards import write_shards

    counts = write_shards(args.dataset, args.tokenizer, Path(args.out), args.val_permille,
                          args.workers, args.engine, args.force)
    print(f"wrote {args.out}: {counts['train']} train + {counts['val']} val tokens from "
          f"{counts['parts']} part(s) ({counts['engine']}, {counts['workers']} worker(s))")


def cmd_review(args) -> None:
    from tinylm.data.curate.review import review

    path = review(args.dataset, args.reviewer, args.note)
    print(f"wrote {path}: {args.reviewer} signed off these bytes")


def cmd_publish(args) -> None:
    from tinylm.data.curate.publish import publish

    publish(args.dataset, args.to, args.version, args.dry_run)


def _add_engine_flags(p) -> None:
    p.add_argument("--workers", type=int, default=1, help="parallel workers (datatrove's "
                                                           "LocalPipelineExecutor when > 1)")
    p.add_argument("--engine", default="auto", help="auto | inprocess | datatrove")


def register(dsub) -> None:
    """Add the curation subcommands to `tinylm data`."""
    d = dsub.add_parser("ingest", help="read text/JSONL/CSV/Parquet (or c4, fineweb-edu, "
                                       "tinystories, hf:NAME) into a dataset with provenance")
    d.add_argument("inputs", nargs="+", help="files, named corpora or hf:NAME")
    d.add_argument("--out", required=True, help="the new dataset folder")
    d.add_argument("--source", help="the claimed source name every row carries (default: "
                                    "the input's name)")
    d.add_argument("--name", help="dataset name (default: the folder's name)")
    d.add_argument("--author", help="who made it (default: $TINYLM_USER, else the login)")
    d.add_argument("--text-field", default="text", help="JSONL/CSV/Parquet text column")
    d.add_argument("--split", default="auto", help="text files: auto | lines | blank | eot")
    d.add_argument("--license", default="unknown", help="licence, for the dataset card")
    d.add_argument("--description", default="", help="one line for the dataset card")
    d.add_argument("--data-dir")
    d.add_argument("--rows-per-part", type=int, default=50_000,
                   help="rows per part file (the unit of parallel work)")
    d.add_argument("--force", action="store_true", help="replace an existing dataset of ours")
    d.set_defaults(func=cmd_ingest)

    d = dsub.add_parser("filter", help="keep the top q percent by a score column or a "
                                       "learned score, or rows above a bar")
    d.add_argument("dataset")
    d.add_argument("--out", required=True)
    d.add_argument("--score-column", help="a numeric meta column (FineWeb-Edu: score; a "
                                          "ranked dataset: difficulty)")
    d.add_argument("--scorer", help="learned score: a tinylm checkpoint (its bits per byte; "
                                    "lower is better)")
    d.add_argument("--keep-top", type=float, help="percent of rows to keep (ties at the "
                                                  "threshold are kept)")
    d.add_argument("--min-score", type=float, help="keep rows with score >= X")
    d.add_argument("--author")
    d.add_argument("--force", action="store_true")
    _add_engine_flags(d)
    d.set_defaults(func=cmd_filter)

    d = dsub.add_parser("rank", help="difficulty per row and a curriculum order (easy first)")
    d.add_argument("dataset")
    d.add_argument("--out", required=True)
    d.add_argument("--scorer", default="zlib", help="zlib (default) or a tinylm checkpoint")
    d.add_argument("--buckets", type=int, default=10, help="difficulty bands of the curriculum")
    d.add_argument("--author")
    d.add_argument("--force", action="store_true")
    _add_engine_flags(d)
    d.set_defaults(func=cmd_rank)

    d = dsub.add_parser("tokenize", help="packed token shards of a dataset (train/val split)")
    d.add_argument("dataset")
    d.add_argument("--tokenizer", required=True, help="tokenizer.json")
    d.add_argument("--out", required=True, help="shards folder")
    d.add_argument("--val-permille", type=int, default=50)
    d.add_argument("--force", action="store_true")
    _add_engine_flags(d)
    d.set_defaults(func=cmd_tokenize)

    d = dsub.add_parser("review", help="sign off a dataset's exact bytes (not its author)")
    d.add_argument("dataset")
    d.add_argument("--reviewer", required=True)
    d.add_argument("--note", default="")
    d.set_defaults(func=cmd_review)

    d = dsub.add_parser("publish", help="publish an audited, second-reviewed dataset to a "
                                        "registry folder (or hf://ORG/NAME)")
    d.add_argument("dataset")
    d.add_argument("--to", required=True, help="registry folder, or hf://ORG/NAME")
    d.add_argument("--version", help="version name (default: the next vN)")
    d.add_argument("--dry-run", action="store_true", help="say what would be published")
    d.set_defaults(func=cmd_publish)
