"""`tinylm merge` (two checkpoints, or a recipe) and `tinylm soup` (the tournament)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinylm.errors import TinyLMError


def _parse_groups(items: list[str] | None) -> dict[str, float]:
    groups = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            groups[name] = _check_t(float(value), f"--t-group {name}")
        except ValueError:
            sep = ""
        if not sep:
            raise TinyLMError(f"--t-group expects GROUP=T (e.g. attention=0.3), got {item!r}")
    return groups


def _parse_floats(text: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TinyLMError(f"{what} expects comma-separated numbers, got {text!r}") from None
    if not values:
        raise TinyLMError(f"{what} expects comma-separated numbers, got {text!r}")
    return [_check_t(v, what) for v in values]


def _check_t(t: float, what: str) -> float:
    """An interpolation weight: finite and in [0, 1] (0 gives A, 1 gives B)."""
    if not 0 <= t <= 1:  # also false for NaN
        raise TinyLMError(f"{what} must be in [0, 1], got {t}")
    return t


def _check_method(method: str) -> None:
    if method not in ("slerp", "lerp"):
        raise TinyLMError(f"--method must be slerp or lerp, got {method!r}")


def cmd_merge(args) -> None:
    from tinylm.io import check_output, remove_path
    from tinylm.merge.tournament import build_merge

    out = Path(args.out)
    _check_method(args.method)
    _check_t(args.t, "--t")
    if args.recipe:
        if args.checkpoints:
            raise TinyLMError("give either --recipe or two checkpoint folders, not both")
        run = Path(args.run or ".")
        source = run / "checkpoints" if (run / "checkpoints").is_dir() else run
        check_output(out, "checkpoint", inputs=[source, run if args.run else None],
                     force=args.force)
        if out.exists():
            remove_path(out)  # allowed by check_output: our own checkpoint, or --force
        build_merge(args.recipe, source, out, args.method)
        print(f"wrote {out} from recipe {args.recipe}")
        return
    if len(args.checkpoints or []) != 2:
        raise TinyLMError("tinylm merge needs two checkpoint folders (or --recipe)")
    check_output(out, "checkpoint", inputs=args.checkpoints, force=args.force)
    merge_pair(Path(args.checkpoints[0]), Path(args.checkpoints[1]), args.t, out, args.method,
               _parse_groups(args.t_group),
               _parse_floats(args.gradient, "--gradient") if args.gradient else None, args.align)
    print(f"wrote {out}")


def merge_pair(path_a: Path, path_b: Path, t: float, out: Path, method: str,
               t_by_group: dict, gradient: list[float] | None, align: bool) -> Path:
    from tinylm.config import from_dict
    from tinylm.merge.slerp import llama_fused_splits, merge_state_dicts
    from tinylm.models import get_family
    from tinylm.train.checkpoint import load_checkpoint, save_checkpoint

    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    if (a.meta["family"], a.meta["model_config"]) != (b.meta["family"], b.meta["model_config"]):
        raise TinyLMError(f"{path_a} and {path_b} have different architectures "
                          f"({a.meta['family']} {a.meta['model_config']} vs "
                          f"{b.meta['family']} {b.meta['model_config']})")
    if a.tokenizer.content_hash() != b.tokenizer.content_hash():
        raise TinyLMError(f"{path_a} and {path_b} use different tokenizers")
    config_cls, model_cls = get_family(a.meta["family"])
    config = from_dict(config_cls, dict(a.meta["model_config"]))
    state_b = b.model_state
    if align:
        if a.meta["family"] != "llama":
            raise TinyLMError("--align supports the llama family only")
        from tinylm.merge.align import align_to

        state_b = align_to(a.model_state, state_b, config)
    merged = merge_state_dicts(a.model_state, state_b, t, method=method,
                               group_of=model_cls.parameter_group, t_by_group=t_by_group or None,
                               depth_gradient=gradient, n_layers=getattr(config, "n_layers", None),
                               split_of=llama_fused_splits(config)
                               if hasattr(config, "ffn_hidden") else None)
    meta = {"step": None, "tokens_seen": None,
            "merge": {"a": str(path_a), "b": str(path_b), "t": t, "method": method,
                      "t_by_group": t_by_group, "gradient": gradient, "aligned": align}}
    return save_checkpoint(out, family=a.meta["family"], model_config=a.meta["model_config"],
                           model_state=merged, tokenizer=a.tokenizer, extra_meta=meta)


def cmd_soup(args) -> None:
    from tinylm.merge.report import print_table, write_report
    from tinylm.merge.tournament import Tournament, TournamentConfig, save_champion
    from tinylm.merge.scoring import scorer_from_settings

    from tinylm.io import check_output
    from tinylm.lock import run_lock

    run = Path(args.run_dir)
    if not (run / "checkpoints").is_dir():
        raise TinyLMError(f"{run}: no checkpoints/ folder (is it a tinylm run folder?)")
    _check_method(args.method)
    config = TournamentConfig(top_k=args.top_k, t_grid=tuple(_parse_floats(args.t, "--t")),
                              generations=args.generations, workers=args.workers,
                              method=args.method)
    scorer, settings = scorer_from_settings(benches=args.bench, limit=args.limit,
                                            arc_metric=args.arc_metric, shots=args.shots,
                                            data_dir=args.data_dir)
    check_output(run / "champion", "checkpoint")
    with run_lock(run):
        tournament = Tournament(run, config, scorer, settings)
        tournament.run()
        champion = save_champion(tournament)
        md, page = write_report(tournament)
    print_table(tournament)
    print(f"champion saved to {champion}; report: {md}, {page}")


def add_scoring_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench", default="wikitext2,blimp,arc_easy",
                   help="benchmarks feeding the composite")
    p.add_argument("--limit", type=int, help="score only the first N items of each benchmark")
    p.add_argument("--arc-metric", default="acc", help="acc | acc_norm, for the composite")
    p.add_argument("--shots", type=int, default=0, help="ARC exemplars (k-shot)")
    p.add_argument("--data-dir")


def register(sub) -> None:
    p = sub.add_parser("merge", help="SLERP/lerp two checkpoints, or rebuild a recipe")
    p.add_argument("checkpoints", nargs="*", help="two checkpoint folders (A, B)")
    p.add_argument("--recipe", help="rebuild a tournament merge from its recipe string")
    p.add_argument("--run", help="with --recipe: the run folder holding checkpoints/")
    p.add_argument("--t", type=float, default=0.5, help="0 gives A, 1 gives B")
    p.add_argument("--t-group", action="append", metavar="GROUP=T",
                   help="per-group t: embeddings, norms, attention, mlp, loop_adapters")
    p.add_argument("--gradient", help="t across depth, e.g. 0,0.5,1 (mergekit-style)")
    p.add_argument("--method", default="slerp", help="slerp | lerp")
    p.add_argument("--align", action="store_true",
                   help="align B's hidden units and heads to A first (independent runs)")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--force", action="store_true", help="replace an existing -o that tinylm "
                   "did not write (never an input, a run folder or a folder of other files)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("soup", help="SLERP tournament over a run's checkpoints")
    p.add_argument("run_dir")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--t", default="0.25,0.5,0.75", help="t grid")
    p.add_argument("--generations", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--method", default="slerp")
    add_scoring_arguments(p)
    p.set_defaults(func=cmd_soup)
