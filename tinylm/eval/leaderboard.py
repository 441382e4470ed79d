"""Leaderboards: every scored model of a run, ranked by composite (lower is better).

An entry is (name, step or None, results), where results is what `evaluate_*` returns or an
already flat `summary`. `collect_run` builds the entries of a run folder: its checkpoints
(RUN/checkpoints/step_*), the tournament's merges (RUN/tournament/merges/*) and the champion,
each looked up in the eval cache with *one* set of settings, so every row of a table was scored
the same way (rows never mix a --limit look with a full run). Other callers, such as the SLERP
tournament, pass their own entries (merges have step None).

A metric whose standard error is known (the summary's KEY_se, see tinylm.eval.stats) is shown
as "value ± se" in every rendering; the best value of a column is still chosen on the value alone.

Three renderings: a rich table in the terminal, Markdown, and a self-contained HTML page with
each metric over training steps drawn by matplotlib and embedded as a base64 PNG (merges and
other step-less models appear as dashed horizontal lines).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

from tinylm.eval.harness import summary
from tinylm.eval.results import write_text

# (summary key, column title, better direction, format)
COLUMNS = [
    ("composite", "composite", "lower", "{:.4f}"),
    ("wikitext2_ce", "WT2 CE", "lower", "{:.4f}"),
    ("wikitext2_bpb", "WT2 bpb", "lower", "{:.4f}"),
    ("blimp_acc", "BLiMP", "higher", "{:.2%}"),
    ("arc_easy_acc", "ARC-E acc", "higher", "{:.2%}"),
    ("arc_easy_acc_norm", "ARC-E acc_norm", "higher", "{:.2%}"),
    ("arc_challenge_acc", "ARC-C acc", "higher", "{:.2%}"),
    # shown only where scored: the instruct metric (gsm8k_chat, tournament --objective instruct)
    ("base_composite", "base composite", "lower", "{:.4f}"),
    ("gsm8k_chat_ce", "GSM8K-chat CE", "lower", "{:.4f}"),
    ("gsm8k_chat_ended", "ends turn", "higher", "{:.2%}"),
]
INSTRUCT_NOTE = ("Composite (instruct objective) = mean(WikiText-2 CE, 1 - BLiMP acc, 1 - "
                 "ARC-Easy acc, GSM8K-chat answer CE, 1 - share of answers ending with "
                 "<|im_end|>); base composite = the first three; lower is better.")


@dataclass
class Entry:
    name: str
    step: int | None
    metrics: dict
    kind: str = "checkpoint"
    path: str | None = None

    @property
    def composite(self) -> float | None:
        return self.metrics.get("composite")


def as_entry(name: str, step: int | None, results: dict, arc_metric: str | None = None,
             kind: str | None = None, path: str | None = None) -> Entry:
    """results: {benchmark: result} from the harness, or a flat summary dict."""
    nested = any(isinstance(v, dict) and "status" in v for v in results.values())
    metrics = summary(results, arc_metric) if nested else dict(results)
    return Entry(name, step, metrics, kind or ("checkpoint" if step is not None else "merge"),
                 path)


def ranked(entries: list[Entry]) -> list[Entry]:
    def key(e: Entry):
        c = e.composite
        return (c is None, c if c is not None else 0.0, e.step if e.step is not None else -1,
                e.name)
    return sorted(entries, key=key)


# --------------------------------------------------------------------------- a run folder

def run_models(run_dir: Path) -> list[tuple[str, int | None, Path, str]]:
    """(name, step, folder, kind) of every model in a run folder."""
    from tinylm.train.checkpoint import list_checkpoints, read_meta

    run_dir = Path(run_dir)
    found = []
    for path in list_checkpoints(run_dir / "checkpoints"):
        found.append((path.name, read_meta(path).get("step"), path, "checkpoint"))
    merges = run_dir / "tournament" / "merges"
    for path in sorted(merges.iterdir()) if merges.is_dir() else []:
        if (path / "meta.json").is_file():
            found.append((read_meta(path).get("recipe") or path.name, None, path, "merge"))
    if (run_dir / "champion" / "meta.json").is_file():
        found.append(("champion", None, run_dir / "champion", "champion"))
    return found


def collect_run(run_dir: Path, benches="wikitext2,blimp,arc_easy", settings=None,
                limit: int | None = None, cache_dir=None, data_dir=None, score: bool = False,
                timeout: float = 3600.0, threads: int = 0, log=None) -> list[Entry]:
    """Entries for every model of a run, from the eval cache; with `score`, models not scored
    yet with these settings are scored now (isolated, as `tinylm eval` does)."""
    from tinylm.eval.harness import evaluate_checkpoint, settings_for

    arc_metric = settings_for(settings, "arc_easy")[0].arc_metric
    entries = []
    for name, step, path, kind in run_models(run_dir):
        results = evaluate_checkpoint(path, benches, settings, data_dir, cache_dir, limit=limit,
                                      timeout=timeout, threads=threads, score=score,
                                      log=log)
        entries.append(as_entry(name, step, results, arc_metric, kind, str(path)))
    return entries


# --------------------------------------------------------------------------- renderings

def _columns(entries: list[Entry]) -> list[tuple]:
    return [c for c in COLUMNS if any(c[0] in e.metrics for e in entries)]


def _best(entries: list[Entry], key: str, better: str):
    values = [e.metrics[key] for e in entries if e.metrics.get(key) is not None]
    if not values:
        return None
    return min(values) if better == "lower" else max(values)


def _cell(entry: Entry, column: tuple) -> str:
    key = column[0]
    text = format_metric(key, entry.metrics.get(key))
    se = entry.metrics.get(f"{key}_se")
    if se is None or entry.metrics.get(key) is None:
        return text
    return f"{text} ± {format_metric(key, se)}"


def _marked_cells(entry: Entry, columns: list[tuple], best: dict, mark: str) -> list[str]:
    """The entry's cells, each column's best value wrapped in `mark` (a format string)."""
    cells = []
    for column in columns:
        text = _cell(entry, column)
        is_best = best[column[0]] is not None and entry.metrics.get(column[0]) == best[column[0]]
        cells.append(mark.format(text) if is_best else text)
    return cells


_FORMATS = {key: fmt for key, _, _, fmt in COLUMNS}


def format_metric(key: str, value) -> str:
    """A metric as every table shows it: accuracies in percent, losses to 4 decimals."""
    if value is None:
        return "-"
    return _FORMATS.get(key, "{:.2%}" if key.endswith("_acc") else "{:.4f}").format(value)


def to_table(entries: list[Entry], title: str = "leaderboard"):
    from rich.table import Table

    entries = ranked(entries)
    columns = _columns(entries)
    table = Table(title=f"{title} (composite: lower is better)")
    for head in ("#", "model", "step"):
        table.add_column(head, justify="right" if head != "model" else "left",
                         no_wrap=head == "model")
    for _, head, better, _ in columns:
        table.add_column(f"{head} {'↓' if better == 'lower' else '↑'}", justify="right")
    best = {c[0]: _best(entries, c[0], c[2]) for c in columns}
    for rank, e in enumerate(entries, 1):
        cells = _marked_cells(e, columns, best, "[bold green]{}[/]")
        table.add_row(str(rank), e.name, "-" if e.step is None else str(e.step), *cells)
    return table


def to_markdown(entries: list[Entry], title: str = "Leaderboard", note: str = "",
                level: int = 1) -> str:
    """The ranked table as Markdown, under a heading of `level` (2 to nest it in a report)."""
    entries = ranked(entries)
    columns = _columns(entries)
    best = {c[0]: _best(entries, c[0], c[2]) for c in columns}
    heads = ["#", "model", "step"] + [f"{h} {'↓' if b == 'lower' else '↑'}"
                                      for _, h, b, _ in columns]
    lines = [f"{'#' * level} {title}", ""]
    if note:
        lines += [note, ""]
    lines += ["| " + " | ".join(heads) + " |",
              "|" + "|".join("---:" if h != "model" else "---" for h in heads) + "|"]
    for rank, e in enumerate(entries, 1):
        cells = _marked_cells(e, columns, best, "**{}**")
        name = e.name.replace("|", "\\|")
        lines.append(f"| {rank} | {name} | {'-' if e.step is None else e.step} | "
                     + " | ".join(cells) + " |")
    lines += ["", ("Bold: best in its column. Composite = mean(WikiText-2 CE, 1 - BLiMP acc, "
                   "1 - ARC-Easy acc); lower is better.")]
    if any("base_composite" in e.metrics for e in entries):
        lines[-1] = f"Bold: best in its column. {INSTRUCT_NOTE}"
    return "\n".join(lines) + "\n"


def plot_png(entries: list[Entry]) -> bytes:
    """Each metric over training steps; step-less models (merges) as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in _columns(entries) if c[0] != "arc_easy_acc_norm"]
    ncols = min(3, len(columns))
    nrows = -(-len(columns) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.3 * nrows), squeeze=False)
    axes = [grid.flatten()]
    for ax in grid.flatten()[len(columns):]:
        ax.set_visible(False)
    stepped = sorted((e for e in entries if e.step is not None), key=lambda e: e.step)
    others = [e for e in entries if e.step is None]
    for ax, (key, head, better, _) in zip(axes[0], columns):
        points = [(e.step, e.metrics[key]) for e in stepped if e.metrics.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", color="tab:blue", label="checkpoints")
        for i, e in enumerate(others):
            if e.metrics.get(key) is not None:
                ax.axhline(e.metrics[key], linestyle="--", linewidth=1,
                           color=f"C{(i + 1) % 10}", label=e.name[:40])
        ax.set_title(f"{head} ({better} is better)", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8,
                   frameon=False)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def to_html(entries: list[Entry], title: str = "Leaderboard", note: str = "") -> str:
    entries = ranked(entries)
    columns = _columns(entries)
    best = {c[0]: _best(entries, c[0], c[2]) for c in columns}
    rows = []
    for rank, e in enumerate(entries, 1):
        cells = "".join(
            f"<td class='{'best' if best[c[0]] is not None and e.metrics.get(c[0]) == best[c[0]] else ''}'>"
            f"{html.escape(_cell(e, c))}</td>" for c in columns)
        rows.append(f"<tr><td>{rank}</td><td class='name'>{html.escape(e.name)}</td>"
                    f"<td>{'-' if e.step is None else e.step}</td>{cells}</tr>")
    heads = "".join(f"<th>{html.escape(h)} {'↓' if b == 'lower' else '↑'}</th>"
                    for _, h, b, _ in columns)
    image = base64.b64encode(plot_png(entries)).decode() if entries else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
td.name {{ text-align: left; font-family: monospace; }}
td.best {{ font-weight: bold; background: #e6f4e6; }}
img {{ max-width: 100%; margin-top: 1.5em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(note)}</p>
<table><tr><th>#</th><th>model</th><th>step</th>{heads}</tr>
{''.join(rows)}
</table>
<p>Composite = mean(WikiText-2 CE, 1 &minus; BLiMP acc, 1 &minus; ARC-Easy acc); lower is better.
Highlighted: best in its column.</p>
{f'<img alt="metrics over training steps" src="data:image/png;base64,{image}">' if image else ''}
</body></html>
"""


def write_leaderboard(entries: list[Entry], out_dir: Path, title: str = "Leaderboard",
                      note: str = "") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    md, page = out_dir / "leaderboard.md", out_dir / "leaderboard.html"
    write_text(md, to_markdown(entries, title, note))
    write_text(page, to_html(entries, title, note))
    return md, page
