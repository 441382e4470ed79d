"""`tinylm eval CKPT... --bench wikitext2,blimp,arc_easy` and `tinylm leaderboard RUN_DIR`.

Results go to the eval cache (the source of truth, see results.py), to CKPT/eval.json (the
latest `tinylm eval` of that checkpoint, whatever its settings, for people reading the folder)
and, with -o, to a file of your choice. A benchmark that times out, crashes or fails is
reported and the others still finish; the command then exits 2.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from tinylm.errors import TinyLMError


def _settings(args):
    from tinylm.config import given_flags
    from tinylm.eval.settings import EvalSettings

    return EvalSettings.from_dict(given_flags(args, EvalSettings))


def _targets(paths: list[str]) -> list[Path]:
    """Checkpoint folders; a run folder stands for all of its step checkpoints."""
    from tinylm.train.checkpoint import list_checkpoints

    found = []
    for text in paths:
        path = Path(text)
        if (path / "checkpoints").is_dir() and not (path / "meta.json").is_file():
            steps = list_checkpoints(path / "checkpoints")
            if not steps:
                raise TinyLMError(f"{path}: a run folder without finished checkpoints")
            found += steps
        else:
            found.append(path)
    return found


def cmd_eval(args) -> None:
    from tinylm.eval.harness import evaluate_checkpoint, report
    from tinylm.eval.results import checkpoint_info, write_json

    from tinylm.eval.harness import check_request
    from tinylm.io import check_output

    settings = _settings(args)
    check_request(args.bench, args.limit, args.data_dir, timeout=args.timeout,
                  threads=args.threads, jobs=args.jobs, batch_tokens=args.batch_tokens)
    targets = _targets(args.checkpoint)
    if args.out:
        check_output(args.out, "file", inputs=targets, force=args.force)
    reports = []
    for path in targets:
        print(f"{path}")
        started = time.perf_counter()
        results = evaluate_checkpoint(path, args.bench, settings, args.data_dir, args.cache_dir,
                                      limit=args.limit, isolate=not args.no_isolation,
                                      timeout=args.timeout, threads=args.threads,
                                      batch_tokens=args.batch_tokens, jobs=args.jobs,
                                      use_cache=not args.no_cache, log=print)
        doc = report(results, checkpoint_info(path), settings, args.limit,
                     round(time.perf_counter() - started, 3))
        reports.append(doc)
        _print_report(doc)
        try:
            write_json(path / "eval.json", doc)
        except OSError as err:  # a read-only checkpoint still gets scored
            print(f"(could not write {path / 'eval.json'}: {err})")
    if args.out:
        write_json(Path(args.out), reports[0] if len(reports) == 1 else {"reports": reports})
        print(f"wrote {args.out}")
    failed = [f"{d['model']['id']}: {b} {s}" for d in reports for b, s in d["not_ok"].items()]
    if failed:
        raise TinyLMError(f"{len(failed)} benchmark run(s) did not finish: {'; '.join(failed)}")


def _print_report(doc: dict) -> None:
    from rich.table import Table

    from tinylm.eval.tasks import BENCHMARKS

    table = Table(show_header=True, header_style="bold")
    for head in ("benchmark", "status", "headline", "details", "time"):
        table.add_column(head)
    for name, result in doc["benchmarks"].items():
        if result["status"] != "ok":
            table.add_row(name, f"[red]{result['status']}[/]", "-",
                          str(result.get("error", "")).splitlines()[0][:80], "-")
            continue
        scores = result["scores"]
        bench = BENCHMARKS.get(name)
        key = bench.headline[0] if bench else ""
        headline = f"{key} {scores[key]:.4f}" if key in scores else "-"
        details = ", ".join(f"{k} {scores[k]:.4f}" if isinstance(scores[k], float) else
                            f"{k} {scores[k]}" for k in (bench.details if bench else ())
                            if k in scores)
        when = "cached" if result.get("cached") else f"{result['wall_seconds']:.1f}s"
        table.add_row(name, "ok", headline, details, when)
    _console().print(table)
    s = doc["summary"]
    if "composite" in s:
        print(f"composite {s['composite']:.4f}  (= mean(WT2 CE {s['wikitext2_ce']:.4f}, "
              f"1 - BLiMP {s['blimp_acc']:.4f}, 1 - ARC-Easy {s['arc_metric']} "
              f"{s['arc_easy_' + s['arc_metric']]:.4f}); {s['arc_shots']}-shot ARC; "
              f"lower is better)")


def cmd_leaderboard(args) -> None:
    from tinylm.eval.leaderboard import collect_run, to_table, write_leaderboard

    from tinylm.eval.harness import check_request
    from tinylm.io import check_output
    from tinylm.lock import run_lock

    run = Path(args.run_dir)
    if not (run / "checkpoints").is_dir():
        raise TinyLMError(f"{run}: no checkpoints/ folder (is it a tinylm run folder?)")
    settings = _settings(args)
    check_request(args.bench, args.limit, args.data_dir, timeout=args.timeout,
                  threads=args.threads, jobs=args.jobs)
    out_dir = Path(args.out or run)
    if out_dir.exists() and not out_dir.is_dir():
        raise TinyLMError(f"--out {out_dir} is a file; give a folder for leaderboard.md/.html")
    if out_dir.resolve() != run.resolve():  # the run's own leaderboard files are ours
        for name in ("leaderboard.md", "leaderboard.html"):
            check_output(out_dir / name, "file", force=args.force)
    with run_lock(run) if args.score else contextlib.nullcontext():
        entries = collect_run(run, args.bench, settings, args.limit, args.cache_dir,
                              args.data_dir, score=args.score, timeout=args.timeout,
                              threads=args.threads, log=print if args.score else None)
    if not entries:
        raise TinyLMError(f"{run}: no checkpoints to rank (the leaderboard would be empty)")
    unscored = [e.name for e in entries if not e.metrics]
    note = (f"benchmarks {args.bench}; limit {args.limit or 'none (full sets)'}; "
            f"ARC {settings.shots}-shot, composite uses {settings.arc_metric}; "
            f"WikiText-2 {settings.wikitext_mode} mode, stride "
            f"{settings.stride or 'context/2'}; {settings.split} split")
    _console().print(to_table(entries, f"{run.name}"))
    print(note)
    if unscored:
        print(f"{len(unscored)} model(s) have no results with these settings: run `tinylm eval "
              f"{run}` (same flags) or add --score")
    md, page = write_leaderboard(entries, out_dir, f"Leaderboard: {run.name}", note)
    print(f"wrote {md} and {page}")


def _console():
    """A rich console that does not squeeze tables to 80 columns when output is piped."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


def add_scoring_flags(p) -> None:
    """--bench, --limit, --data-dir and one flag per EvalSettings field: what `tinylm eval`,
    `tinylm leaderboard` and `tinylm tournament` score with (read back by `scoring_from_args`)."""
    from tinylm.config import add_dataclass_flags
    from tinylm.eval.settings import DEFAULT_BENCHES, EvalSettings

    p.add_argument("--bench", default=DEFAULT_BENCHES,
                   help="comma-separated: wikitext2, blimp, arc_easy, arc_challenge")
    p.add_argument("--limit", type=int, help="first N items of each (sub)task for a quick look: "
                                             "N pairs per BLiMP paradigm, N ARC questions, "
                                             "N WikiText-2 articles")
    p.add_argument("--data-dir")
    add_dataclass_flags(p, EvalSettings)


def scoring_from_args(args, default_split: str | None = None):
    """The ScoringConfig of the flags; `default_split` applies when --split is not given (a
    tournament chooses, so it reads the selection split unless told otherwise)."""
    import dataclasses

    from tinylm.eval.settings import ScoringConfig

    settings = _settings(args)
    if default_split and getattr(args, "split", None) is None:
        settings = dataclasses.replace(settings, split=default_split)
    return ScoringConfig(bench=args.bench, limit=args.limit, settings=settings)


def _common(p) -> None:
    from tinylm.eval.settings import DEFAULT_TIMEOUT

    add_scoring_flags(p)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds per benchmark before its process is killed")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per benchmark process (0: cores / parallel jobs)")
    p.add_argument("--jobs", type=int, default=0,
                   help="benchmark processes at a time (0: one per core)")
    p.add_argument("--cache-dir", help="eval cache (default $TINYLM_CACHE/eval or "
                                       "~/.cache/tinylm/eval)")


def register(sub) -> None:
    p = sub.add_parser("eval", help="score checkpoints on WikiText-2, BLiMP, ARC-Easy "
                                    "(+ the composite)")
    p.add_argument("checkpoint", nargs="+", help="checkpoint folder(s), or a run folder")
    _common(p)
    p.add_argument("--no-isolation", action="store_true",
                   help="score in this process (no timeouts, no child processes)")
    p.add_argument("--no-cache", action="store_true", help="score again even if cached")
    p.add_argument("--batch-tokens", type=int,
                   help="rows x padded length per forward pass (default 1024 on a CPU)")
    p.add_argument("-o", "--out", help="also write the report JSON here")
    p.add_argument("--force", action="store_true", help="replace an existing -o file not "
                                                         "written by tinylm")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("leaderboard", help="rank a run's scored checkpoints and merges "
                                           "(terminal, Markdown, HTML)")
    p.add_argument("run_dir")
    _common(p)
    p.add_argument("--score", action="store_true", help="score what is not cached yet")
    p.add_argument("--out", help="folder for leaderboard.md/.html (default: the run folder)")
    p.add_argument("--force", action="store_true", help="replace leaderboard files in --out "
                                                         "not written by tinylm")
    p.set_defaults(func=cmd_leaderboard)
