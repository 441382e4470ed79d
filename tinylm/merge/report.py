"""The tournament's report: the leaderboard, the merge tree as a picture, and a plain answer to
"did any merge beat the best single checkpoint, and by how much on each metric?".

Written as Markdown and as one self-contained HTML page (the picture is an embedded PNG drawn
with matplotlib), and printed as a table in the terminal.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

from tinylm.merge.recipe import Leaf, parse_recipe
from tinylm.io import write_text_atomic

# metrics a scorer may report, with how to show them and which direction is better
METRIC_ORDER = [("composite", "composite", "lower"), ("wikitext2_ce", "WikiText-2 CE", "lower"),
                ("wikitext2_bpb", "WikiText-2 bpb", "lower"), ("blimp_acc", "BLiMP", "higher"),
                ("arc_easy_acc", "ARC-Easy", "higher")]


def shown_metrics(entries) -> list[tuple[str, str, str]]:
    present = set().union(*(e.metrics.keys() for e in entries)) if entries else set()
    return [m for m in METRIC_ORDER if m[0] in present]


def comparison(tournament) -> dict:
    """Best merge vs best checkpoint on every metric (positive delta = the merge is better)."""
    ranked = tournament.ranked()
    best_ckpt = tournament.best_checkpoint()
    merges = [e for e in ranked if e.generation >= 0]
    if not merges:
        return {"best_checkpoint": best_ckpt.name, "best_merge": None, "merge_won": False,
                "deltas": {}}
    best_merge = merges[0]
    deltas = {}
    for key, _, better in shown_metrics([best_ckpt, best_merge]):
        a, b = best_ckpt.metrics.get(key), best_merge.metrics.get(key)
        if a is not None and b is not None:
            deltas[key] = (a - b) if better == "lower" else (b - a)
    return {"best_checkpoint": best_ckpt.name, "best_merge": best_merge.name,
            "merge_won": best_merge.composite < best_ckpt.composite, "deltas": deltas}


def verdict_text(tournament) -> str:
    result = comparison(tournament)
    if result["best_merge"] is None:
        return "No merge was scored."
    if result["merge_won"]:
        gain = result["deltas"]["composite"]
        return (f"A merge beat the best single checkpoint: {result['best_merge']} scores "
                f"{gain:.4f} lower composite than {result['best_checkpoint']}.")
    return (f"No merge beat the best single checkpoint ({result['best_checkpoint']}). The best "
            f"merge, {result['best_merge']}, is {-result['deltas']['composite']:.4f} worse on "
            f"the composite.")


def averaging_text(tournament) -> str:
    """Did SLERP beat simple averaging (the soups, LAWA, EMA)? On the selection scores."""
    merge, baselines = tournament.best_merge(), tournament.baselines()
    if merge is None or not baselines:
        return ""
    best = baselines[0]
    if merge.composite < best.composite:
        return (f"SLERP beat simple averaging: {merge.name} {merge.composite:.4f} against the "
                f"best average, {best.name}, {best.composite:.4f}.")
    return (f"Simple averaging did as well as SLERP or better: {best.name} "
            f"{best.composite:.4f} against the best SLERP merge {merge.composite:.4f}.")


# --------------------------------------------------------------------------- tables

def leaderboard_entries(tournament, limit: int | None = None) -> list:
    """The tournament's models as `tinylm.eval.leaderboard` entries (merges have no step), so
    its tables and plots are the ones `tinylm leaderboard` draws."""
    from tinylm.eval.leaderboard import Entry

    def kind(e) -> str:
        return {-1: "checkpoint", -2: "baseline"}.get(e.generation, f"gen {e.generation} merge")

    return [Entry(e.name, e.step if e.generation == -1 else None, e.metrics, kind(e), e.path)
            for e in tournament.ranked()[:limit]]


def markdown(tournament, limit: int = 40) -> str:
    from tinylm.eval.leaderboard import format_metric, to_markdown

    lines = ["# Tournament report", "", verdict_text(tournament), averaging_text(tournament), "",
             f"Stopped: {tournament.stopped_because}.", "", "## Best merge vs best checkpoint",
             "", "| metric | best checkpoint | best merge | merge better by |", "|---|---|---|---|"]
    result = comparison(tournament)
    if result["best_merge"]:
        a, b = tournament.entries[result["best_checkpoint"]], tournament.entries[result["best_merge"]]
        for key, label, _ in shown_metrics([a, b]):
            delta = format_metric(key, result["deltas"][key])
            lines.append(f"| {label} | {format_metric(key, a.metrics[key])} | "
                         f"{format_metric(key, b.metrics[key])} | "
                         f"{'' if delta.startswith('-') else '+'}{delta} |")
    lines += ["", to_markdown(leaderboard_entries(tournament, limit), level=2)]
    return "\n".join(lines)


def print_table(tournament, limit: int = 20) -> None:
    from rich.console import Console

    from tinylm.eval.leaderboard import to_table

    console = Console()
    console.print(to_table(leaderboard_entries(tournament, limit), "tournament leaderboard"))
    console.print(verdict_text(tournament))


# --------------------------------------------------------------------------- the merge tree

def merge_tree_png(tournament) -> bytes:
    """Checkpoints in the left column, each generation of merges in a column to its right,
    edges from parents to child labelled with t; colour is the composite (darker = better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in tournament.ranked() if e.generation != -2]  # baselines: no tree
    columns: dict[int, list] = {}
    for e in entries:
        columns.setdefault(e.generation, []).append(e)
    pos = {}
    for col, gen in enumerate(sorted(columns)):
        for row, e in enumerate(sorted(columns[gen], key=lambda e: e.composite)):
            pos[e.name] = (col, -row)
    scores = [e.composite for e in entries]
    lo, hi = min(scores), max(scores)
    height = max(len(c) for c in columns.values())
    fig, ax = plt.subplots(figsize=(3.2 * len(columns) + 2, 0.45 * height + 1.8), dpi=110)
    cmap = plt.get_cmap("viridis_r")
    for e in entries:
        tree = parse_recipe(e.name)
        if isinstance(tree, Leaf):
            continue
        from tinylm.merge.recipe import format_recipe

        for parent in (tree.left, tree.right):
            key = format_recipe(parent, compact=True)
            if key in pos:
                (x0, y0), (x1, y1) = pos[key], pos[e.name]
                ax.plot([x0, x1], [y0, y1], color="0.75", lw=0.8, zorder=1)
        x, y = pos[e.name]
        ax.annotate(f"t={tree.t:.2f}", (x, y), textcoords="offset points", xytext=(-26, 7),
                    fontsize=6, color="0.4")
    champion = entries[0].name
    for e in entries:
        x, y = pos[e.name]
        shade = 0.5 if hi == lo else (e.composite - lo) / (hi - lo)
        ax.scatter([x], [y], s=160 if e.name == champion else 60, color=cmap(1 - shade),
                   edgecolor="red" if e.name == champion else "black", lw=1.5, zorder=2)
        label = e.name if len(e.name) < 46 else e.name[:43] + "..."
        ax.annotate(f"{label}  {e.composite:.3f}", (x, y), textcoords="offset points",
                    xytext=(8, -3), fontsize=6.5)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(["checkpoints" if g < 0 else f"generation {g}" for g in sorted(columns)])
    ax.set_yticks([])
    ax.set_xlim(-0.3, len(columns) - 0.1)
    ax.set_title("merge tree (red ring: champion; darker: lower composite)")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def html_page(tournament) -> str:
    png = base64.b64encode(merge_tree_png(tournament)).decode("ascii")
    body = markdown_to_html_tables(markdown(tournament))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tinylm tournament</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
            "font-size:13px}</style></head><body>" + body +
            f"<h2>Merge tree</h2><img alt='merge tree' src='data:image/png;base64,{png}' "
            f"style='max-width:100%'></body></html>")


def _bold(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)


def markdown_to_html_tables(text: str) -> str:
    """Just enough Markdown for our own report: headings, paragraphs and pipe tables."""
    out, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "")) <= set("-: ")]  # rule
            cells = [[_bold(html.escape(c.strip())) for c in r.strip("|").split("|")]
                     for r in rows]
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr>" +
                       "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                               for r in cells[1:]) + "</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            out.append(f"<p>{_bold(html.escape(line))}</p>")
    flush()
    return "\n".join(out)


def write_report(tournament) -> tuple[Path, Path]:
    md_path, html_path = tournament.dir / "report.md", tournament.dir / "report.html"
    write_text_atomic(md_path, markdown(tournament))
    write_text_atomic(html_path, html_page(tournament))
    return md_path, html_path
