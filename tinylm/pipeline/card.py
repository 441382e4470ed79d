"""The champion's model card, written from measured data only: every figure in it is read from
the run folder (checkpoint metadata, tournament state, timings, samples), never typed in."""

from __future__ import annotations

import json

from tinylm.eval.leaderboard import format_metric
from tinylm.merge.report import METRIC_ORDER
from tinylm.io import check_output, write_text_atomic


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
              "| metric | champion | best single checkpoint |", "|---|---:|---:|"]
    for key, label, better in METRIC_ORDER:
        if key in meta["scores"]:
            lines.append(f"| {label} ({better} is better) | {format_metric(key, meta['scores'][key])} | "
                         f"{format_metric(key, best['scores'].get(key))} |")
    verdict = ("The champion is a merge; it beats the best single checkpoint "
               f"(`{best['name']}`) on the composite." if meta["champion_is_merge"] else
               f"No merge beat the best single checkpoint, so the champion is that checkpoint "
               f"(`{best['name']}`).")
    lines += ["", verdict, "", "## Recipe", "", f"`{meta['recipe']}`", "",
              "## Samples", "", f"Decoding: `{json.dumps(samples['settings'])}`", ""]
    for s in samples["samples"]:
        lines += [f"**{s['prompt']}**{s['completion']}", ""]
    lines += ["## Reproduce", "", f"`tinylm run {recipe.name}`", ""]
    return "\n".join(lines)


def write_card(pipeline):
    """Write RUN/MODEL_CARD.md (never over a card tinylm did not write) and return its path."""
    path = check_output(pipeline.out / "MODEL_CARD.md", "file")
    write_text_atomic(path, card_markdown(pipeline))
    return path
