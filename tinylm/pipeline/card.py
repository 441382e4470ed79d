"""The champion's model card, written from measured data only: every figure in it is read from
the run folder (checkpoint metadata, tournament state, timings, samples), never typed in."""

from __future__ import annotations

import json

from tinylm.eval.leaderboard import format_metric
from tinylm.io import check_output, write_text_atomic
from tinylm.merge.report import METRIC_ORDER
from tinylm.pipeline.heldout import load_heldout


def card_markdown(pipeline) -> str:
    from tinylm.models import get_family
    from tinylm.train.checkpoint import load_checkpoint

    out, recipe = pipeline.out, pipeline.recipe
    champion = load_checkpoint(out / "champion")
    meta = champion.meta
    model = champion.build_model()
    parts = get_family(model.family).breakdown(model)
    total = sum(parts.values())
    weights_bytes = (out / "champion" / "model.safetensors").stat().st_size
    samples = json.loads((out / "samples.json").read_text())
    seconds = pipeline.state["seconds"]
    hw = pipeline.state.get("hardware", {})
    best = meta["best_checkpoint"]
    scorer = meta["tournament"]["scorer"]

    lines = [f"# {recipe.name}: tinylm champion", "", recipe.description, "",
             "## Model", "",
             f"- Family `{meta['family']}`, {total:,} parameters "
             f"({weights_bytes:,} bytes of safetensors weights).",
             f"- Config: `{json.dumps(meta['model_config'])}`",
             f"- Tokenizer: {meta['tokenizer']['kind']}, vocab {meta['tokenizer']['vocab_size']} "
             f"(hash `{meta['tokenizer']['hash'][:16]}`).", "",
             "| part | parameters |", "|---|---:|"]
    lines += [f"| `{name}` | {count:,} |" for name, count in parts.items()]
    lines += ["", "## Training", "",
              f"- Data: `{recipe.data.name}`; tokens seen by the newest checkpoint in the "
              f"champion: {meta.get('tokens_seen') or 0:,}.",
              f"- Hardware: {hw.get('cpu', '?')} ({hw.get('cores', '?')} cores)"
              + (f", GPU {hw['gpu']}" if hw.get("gpu") else "") +
              f"; torch {hw.get('torch', '?')}.",
              "- Wall time: " + ", ".join(f"{stage} {secs:.0f}s" for stage, secs in
                                          seconds.items()) + ".", "",
              "## Scores", "",
              f"Benchmarks: {scorer.get('benches', '?')}"
              + (f", --limit {scorer['limit']} (the first {scorer['limit']} WikiText-2 articles, "
                 f"ARC-Easy questions, and pairs of each of BLiMP's 67 paradigms)"
                 if scorer.get("limit") else ", full sets")
              + f"; ARC metric `{scorer.get('arc_metric', 'acc')}`, {scorer.get('shots', 0)}-shot. "
              "Composite = mean(WikiText-2 CE, 1 - BLiMP, 1 - ARC-Easy), lower is better.", "",
              "The scores in this table are those the choice was made on (the selection split); "
              "the held-out report split follows below.", "",
              "| metric | champion | best single checkpoint |", "|---|---:|---:|"]
    for key, label, better in METRIC_ORDER:
        if key in meta["scores"]:
            lines.append(f"| {label} ({better} is better) | {format_metric(key, meta['scores'][key])} | "
                         f"{format_metric(key, best['scores'].get(key))} |")
    if meta.get("champion_is_baseline"):
        kind = meta["lineage"].get("leaves", [])
        verdict = (f"The champion is a baseline average (`{meta['recipe']}`, of "
                   f"{', '.join(f'`{k}`' for k in kind)}): on the selection split it beat every "
                   f"SLERP merge and the best single checkpoint (`{best['name']}`).")
    elif meta["champion_is_merge"]:
        verdict = ("The champion is a SLERP merge; on the selection split it beats the best "
                   f"single checkpoint (`{best['name']}`) on the composite.")
    else:
        verdict = (f"No merge or average beat the best single checkpoint on the selection "
                   f"split, so the champion is that checkpoint (`{best['name']}`).")
    lines += ["", verdict, "", *heldout_markdown(load_heldout(out)),
              "## Recipe", "", f"`{meta['recipe']}`", "",
              "## Samples", "", f"Decoding: `{json.dumps(samples['settings'])}`", ""]
    for s in samples["samples"]:
        lines += [f"**{s['prompt']}**{s['completion']}", ""]
    lines += ["## Reproduce", "", f"`tinylm run {recipe.name}`", ""]
    return "\n".join(lines)


def _pm(row: dict, key: str, percent: bool = False) -> str:
    value, se = row.get(key), row.get(f"{key}_se")
    if value is None:
        return "-"
    scale = 100.0 if percent else 1.0
    text = f"{value * scale:.2f}%" if percent else f"{value:.4f}"
    return text + (f" ± {se * scale:.2f}" if se is not None and percent else
                   f" ± {se:.4f}" if se is not None else "")


def heldout_markdown(doc: dict | None) -> list[str]:
    """The held-out table (report split, ± one standard error) and the paired comparison;
    its verdict is whatever the interval says."""
    if doc is None:
        return []
    arc = doc["scoring"]["arc_metric"]
    lines = ["## Held-out report", "",
             "Every model below was chosen on the selection split (WikiText-2 validation, "
             "ARC-Easy validation, half of each BLiMP paradigm) and is scored here, once, on "
             "the report split nothing looked at before (WikiText-2 test, ARC-Easy test, the "
             "other halves). ± is one standard error over items (documents for WikiText-2)."
             + (f" Report items: the first {doc['scoring']['limit']} of each benchmark."
                if doc["scoring"].get("limit") else ""), "",
             "| model | role | composite, selection | composite, report | WikiText-2 CE | "
             "BLiMP | ARC-Easy |", "|---|---|---:|---:|---:|---:|---:|"]
    for row in doc["models"]:
        rep = row["report"]
        lines.append(f"| `{row['name']}` | {row['role']} | {row['selection']['composite']:.4f} "
                     f"| {_pm(rep, 'composite')} | {_pm(rep, 'wikitext2_ce')} | "
                     f"{_pm(rep, 'blimp_acc', True)} | {_pm(rep, f'arc_easy_{arc}', True)} |")
    lines += ["", *comparison_lines(doc), "", averaging_line(doc), ""]
    return lines


def averaging_line(doc: dict) -> str:
    """Did SLERP beat simple averaging (soups, LAWA, EMA)? On the report split."""
    merges = [r for r in doc["models"] if r["role"] == "best SLERP merge"]
    averages = sorted((r for r in doc["models"] if r["role"] == "baseline"),
                      key=lambda r: r["report"]["composite"])
    if not merges or not averages:
        return "No SLERP merge or no average was scored, so they are not compared."
    merge, average = merges[0], averages[0]
    gap = merge["report"]["composite"] - average["report"]["composite"]
    se = (merge["report"].get("composite_se") or 0.0, average["report"].get("composite_se")
          or 0.0)
    within = abs(gap) < 1.96 * (se[0] ** 2 + se[1] ** 2) ** 0.5
    verdict = ("SLERP beat simple averaging" if gap < 0 else
               "simple averaging did as well as SLERP or better")
    return (f"On the report split {verdict}: the best SLERP merge `{merge['name']}` "
            f"{merge['report']['composite']:.4f} against the best average `{average['name']}` "
            f"{average['report']['composite']:.4f} ({gap:+.4f}"
            + ("; within two standard errors, so not a clear difference)." if within else ")."))


def comparison_lines(doc: dict) -> list[str]:
    from tinylm.eval.stats import format_comparison

    best = doc["models"][1]
    vs = doc.get("champion_vs_best_checkpoint")
    if vs is None:
        return [f"The champion is the best single checkpoint (`{best['name']}`), so there is "
                f"nothing to compare on the report split."]
    comp = vs["composite"]
    if comp["ci_high"] < 0:
        verdict = "the champion is better on held-out items (the interval excludes 0)"
    elif comp["ci_low"] > 0:
        verdict = "the champion is worse on held-out items (the interval excludes 0)"
    else:
        verdict = ("the difference is within noise on held-out items (the interval "
                   "includes 0): selection chose the champion, the report cannot tell them apart")
    return [f"Champion minus best checkpoint (`{best['name']}`) on the report split, paired "
            f"over the same items: composite {format_comparison(comp)} (lower is better); "
            f"WikiText-2 CE {format_comparison(vs['wikitext2'])}; BLiMP "
            f"{format_comparison(vs['blimp'], percent=True)}; ARC-Easy "
            f"{format_comparison(vs['arc_easy'], percent=True)}, McNemar p = "
            f"{vs['arc_easy'].get('mcnemar_p', float('nan')):.3f}. So {verdict}."]


def write_card(pipeline):
    """Write RUN/MODEL_CARD.md (never over a card tinylm did not write) and return its path."""
    path = check_output(pipeline.out / "MODEL_CARD.md", "file")
    write_text_atomic(path, card_markdown(pipeline))
    return path
