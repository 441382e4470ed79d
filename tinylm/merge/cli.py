"""`tinylm merge` (two checkpoints, a recipe, or a soup of several) and `tinylm tournament`
(alias `tinylm soup`, its first name): the SLERP tournament over a run's checkpoints."""

from __future__ import annotations

from pathlib import Path

from tinylm.config import parse_bool
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

    out = Path(args.out)
    _check_method(args.method)
    if args.t is not None:
        _check_t(args.t, "--t")
    if args.recipe:
        _refuse_with_recipe(args)
        from tinylm.merge.tournament import build_merge

        run = Path(args.run or ".")
        source = run / "checkpoints" if (run / "checkpoints").is_dir() else run
        check_output(out, "checkpoint", inputs=[source, run if args.run else None],
                     force=args.force)
        if out.exists():
            remove_path(out)  # allowed by check_output: our own checkpoint, or --force
        build_merge(args.recipe, source, out, args.method)
        print(f"wrote {out} from recipe {args.recipe}")
        return
    paths = [Path(p) for p in args.checkpoints or []]
    if args.soup:
        check_output(out, "checkpoint", inputs=paths, force=args.force)
        soup_checkpoints(paths, args.soup, out, args)
        return
    if len(paths) != 2:
        raise TinyLMError("tinylm merge needs two checkpoint folders (or --recipe, or --soup "
                          "with two or more)")
    check_output(out, "checkpoint", inputs=paths, force=args.force)
    merge_pair(paths[0], paths[1], 0.5 if args.t is None else args.t, out, args.method,
               _parse_groups(args.t_group),
               _parse_floats(args.gradient, "--gradient") if args.gradient else None, args.align)
    print(f"wrote {out}")


def _refuse_with_recipe(args) -> None:
    """A recipe names its merges and their t completely; a flag that would change them is a
    mistake, not an override."""
    given = [flag for flag, value in (("--t", args.t), ("--t-group", args.t_group),
                                      ("--gradient", args.gradient), ("--align", args.align),
                                      ("--soup", args.soup)) if value]
    if args.checkpoints:
        given.insert(0, "checkpoint folders")
    if given:
        raise TinyLMError(f"--recipe names its merges completely; it cannot be combined with "
                          f"{', '.join(given)}")


def soup_checkpoints(paths: list[Path], kind: str, out: Path, args) -> Path:
    """A model soup (Wortsman et al. 2022) of two or more checkpoints: `uniform` averages them
    all; `greedy` adds them best first, keeping each only if the composite (scored with the
    eval flags) improves."""
    from tinylm.merge.soup import greedy_soup, uniform_soup
    from tinylm.train.checkpoint import save_checkpoint

    if len(paths) < 2:
        raise TinyLMError("--soup needs two or more checkpoint folders")
    if kind not in ("uniform", "greedy"):
        raise TinyLMError(f"--soup must be uniform or greedy, got {kind!r}")
    loaded = _load_alike(paths)
    states = {str(path): ckpt.model_state for path, ckpt in zip(paths, loaded)}
    first = loaded[0]
    from tinylm.models import get_family

    frozen = get_family(first.meta["family"]).frozen_prefixes
    if kind == "uniform":
        state, kept = uniform_soup(list(states.values()), frozen), list(states)
    else:
        from tinylm.eval.cli import scoring_from_args

        state, kept = greedy_soup(states, _composite_of(
            first, scoring_from_args(args, "selection"), args.data_dir), frozen=frozen)
    meta = {"step": None, "tokens_seen": None, "soup": {"kind": kind, "members": kept,
                                                        "candidates": list(states)}}
    save_checkpoint(out, family=first.meta["family"], model_config=first.meta["model_config"],
                    model_state=state, tokenizer=first.tokenizer, extra_meta=meta)
    print(f"wrote {out}: {kind} soup of {len(kept)} of {len(paths)} checkpoints")
    return out


def _load_alike(paths: list[Path]) -> list:
    """The checkpoints, checked to share the architecture and the tokenizer."""
    from tinylm.train.checkpoint import load_checkpoint

    loaded = [load_checkpoint(path) for path in paths]
    first = loaded[0]
    for path, ckpt in zip(paths[1:], loaded[1:]):
        if (ckpt.meta["family"], ckpt.meta["model_config"]) != (first.meta["family"],
                                                                 first.meta["model_config"]):
            raise TinyLMError(f"{paths[0]} and {path} have different architectures")
        if ckpt.tokenizer.content_hash() != first.tokenizer.content_hash():
            raise TinyLMError(f"{paths[0]} and {path} use different tokenizers")
    return loaded


def _composite_of(template, scoring, data_dir):
    """state dict -> composite (lower is better), scored in this process."""
    from tinylm.eval.harness import evaluate_model, summary
    from tinylm.merge.scoring import make_scorer

    _, described = make_scorer(scoring, data_dir)

    def score(state) -> float:
        model = template.build_model()
        model.load_state_dict(state)
        results = evaluate_model(model, template.tokenizer, benches=described["benches"],
                                 settings=described["settings"], data_dir=data_dir,
                                 isolate=False)
        failed = [b for b, r in results.items() if r.get("status") != "ok"]
        if failed:
            raise TinyLMError(f"greedy soup: benchmark(s) {failed} failed")
        return summary(results, described["arc_metric"])["composite"]

    return score


def merge_pair(path_a: Path, path_b: Path, t: float, out: Path, method: str,
               t_by_group: dict, gradient: list[float] | None, align: bool) -> Path:
    from tinylm.merge.slerp import family_layout, merge_state_dicts
    from tinylm.models import get_family
    from tinylm.train.checkpoint import load_checkpoint, save_checkpoint

    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    if (a.meta["family"], a.meta["model_config"]) != (b.meta["family"], b.meta["model_config"]):
        raise TinyLMError(f"{path_a} and {path_b} have different architectures "
                          f"({a.meta['family']} {a.meta['model_config']} vs "
                          f"{b.meta['family']} {b.meta['model_config']})")
    if a.tokenizer.content_hash() != b.tokenizer.content_hash():
        raise TinyLMError(f"{path_a} and {path_b} use different tokenizers")
    record = get_family(a.meta["family"])
    config = record.config_from(a.meta["model_config"])
    state_b = b.model_state
    if align:
        if record.align is None:
            raise TinyLMError(f"--align is not available for the {record.name} family (its "
                              f"record declares no permutation spec)")
        from tinylm.merge.align import align_to

        state_b = align_to(a.model_state, state_b, record.align(config))
    merged = merge_state_dicts(a.model_state, state_b, t, method=method,
                               t_by_group=t_by_group or None, depth_gradient=gradient,
                               **family_layout(record, config))
    meta = {"step": None, "tokens_seen": None,
            "merge": {"a": str(path_a), "b": str(path_b), "t": t, "method": method,
                      "t_by_group": t_by_group, "gradient": gradient, "aligned": align}}
    if record.merge_notes is not None:  # what the family adds (bitnet: ternary flips)
        meta["merge_notes"] = notes = record.merge_notes(a.model_state, state_b, merged, config)
        print(f"merge notes: {format_notes(notes)}")
    return save_checkpoint(out, family=a.meta["family"], model_config=a.meta["model_config"],
                           model_state=merged, tokenizer=a.tokenizer, extra_meta=meta)


def format_notes(notes: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in notes.items())


def cmd_tournament(args) -> None:
    from tinylm.eval.cli import scoring_from_args
    from tinylm.io import check_output
    from tinylm.lock import run_lock
    from tinylm.merge.report import print_table, write_report
    from tinylm.merge.scoring import make_scorer
    from tinylm.merge.tournament import Tournament, TournamentConfig, save_champion

    run = Path(args.run_dir)
    if not (run / "checkpoints").is_dir():
        raise TinyLMError(f"{run}: no checkpoints/ folder (is it a tinylm run folder?)")
    _check_method(args.method)
    config = TournamentConfig(top_k=args.top_k, t_grid=tuple(_parse_floats(args.t, "--t")),
                              generations=args.generations, workers=args.workers,
                              method=args.method, search=args.search, budget=args.budget,
                              per_metric_seeds=args.per_metric_seeds, baselines=args.baselines,
                              lawa_k=args.lawa_k, seed=args.seed)
    scorer, settings = make_scorer(scoring_from_args(args, "selection"), args.data_dir,
                                   objective=args.objective)
    check_output(run / "champion", "checkpoint")
    with run_lock(run):
        tournament = Tournament(run, config, scorer, settings)
        tournament.run()
        champion = save_champion(tournament)
        md, page = write_report(tournament)
    print_table(tournament)
    print(f"champion saved to {champion}; report: {md}, {page}")


def register(sub) -> None:
    from tinylm.eval.cli import add_scoring_flags
    from tinylm.merge.tournament import TournamentConfig

    p = sub.add_parser("merge", help="SLERP/lerp two checkpoints, rebuild a recipe, or soup "
                                     "several")
    p.add_argument("checkpoints", nargs="*", help="two checkpoint folders (A, B); two or more "
                                                  "with --soup")
    p.add_argument("--recipe", help="rebuild a tournament merge from its recipe string")
    p.add_argument("--run", help="with --recipe: the run folder holding checkpoints/")
    p.add_argument("--t", type=float, help="0 gives A, 1 gives B (default 0.5)")
    p.add_argument("--t-group", action="append", metavar="GROUP=T",
                   help="per-group t (`tinylm info` lists a model's groups), e.g. attention=0.3")
    p.add_argument("--gradient", help="t across depth, e.g. 0,0.5,1 (mergekit-style)")
    p.add_argument("--method", default=TournamentConfig.method, help="slerp | lerp")
    p.add_argument("--align", action="store_true",
                   help="align B's hidden units and heads to A first (independent runs)")
    p.add_argument("--soup", help="uniform | greedy: average the checkpoints (greedy keeps each "
                                  "only if the composite improves; scored with the eval flags)")
    add_scoring_flags(p)
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--force", action="store_true", help="replace an existing -o that tinylm "
                   "did not write (never an input, a run folder or a folder of other files)")
    p.set_defaults(func=cmd_merge)

    defaults = TournamentConfig()
    p = sub.add_parser("tournament", aliases=["soup"],
                       help="SLERP tournament over a run's checkpoints: champion + report")
    p.add_argument("run_dir")
    p.add_argument("--top-k", type=int, default=defaults.top_k)
    p.add_argument("--t", default=",".join(str(t) for t in defaults.t_grid), help="t grid")
    p.add_argument("--generations", type=int, default=defaults.generations)
    p.add_argument("--workers", type=int, default=defaults.workers)
    p.add_argument("--method", default=defaults.method)
    p.add_argument("--search", default=defaults.search,
                   help="grid (every pair x t grid) | cmaes | tpe (Optuna, per-group t)")
    p.add_argument("--budget", type=int, default=defaults.budget,
                   help="merges per generation for cmaes/tpe (0: as many as the grid)")
    p.add_argument("--per-metric-seeds", type=parse_bool, default=defaults.per_metric_seeds,
                   help="also seed the pool with the best model on each metric")
    p.add_argument("--baselines", type=parse_bool, default=defaults.baselines,
                   help="also score uniform/greedy soups, LAWA and EMA")
    p.add_argument("--lawa-k", type=int, default=defaults.lawa_k)
    p.add_argument("--seed", type=int, default=defaults.seed, help="the search's seed")
    p.add_argument("--objective", default="base",
                   help="base (the composite) | instruct (adds gsm8k_chat and ranks by the "
                        "instruct composite: for an SFT run, whose step 0 is its base)")
    add_scoring_flags(p)
    p.set_defaults(func=cmd_tournament)
