"""`tinylm run [RECIPE]`: train, score every checkpoint, SLERP tournament, champion, card,
report. With no argument it runs the built-in `default` recipe."""

from __future__ import annotations


def cmd_run(args) -> None:
    from tinylm.pipeline.recipe import builtin_recipes, load_recipe
    from tinylm.pipeline.runner import Pipeline

    if args.list:
        for name in builtin_recipes():
            recipe = load_recipe(name)
            print(f"{name:12s} {recipe.description}\n{'':12s} for: {recipe.hardware}; "
                  f"time: {recipe.time or 'not estimated'}")
        return
    recipe = load_recipe(args.recipe)
    if args.data_dir:
        recipe.data.data_dir = args.data_dir
    Pipeline(recipe, args.out).run()


def register(sub) -> None:
    p = sub.add_parser("run", help="the whole loop: train, score, tournament, champion, report")
    p.add_argument("recipe", nargs="?", default="default",
                   help="a built-in recipe name or a .toml file (default: default)")
    p.add_argument("--out", help="run folder (default runs/<recipe name>)")
    p.add_argument("--data-dir")
    p.add_argument("--list", action="store_true", help="list the built-in recipes")
    p.set_defaults(func=cmd_run)
