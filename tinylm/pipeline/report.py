"""One self-contained HTML page per run: loss curves, every benchmark over training steps, the
leaderboard of checkpoints and merges, the merge tree and the samples. Pictures are drawn with
matplotlib and embedded as PNG, so the page opens offline in any browser."""

from __future__ import annotations

import base64
import html
import io
import json

from tinylm.pipeline.card import heldout_markdown
from tinylm.pipeline.heldout import load_heldout
from tinylm.merge.report import (leaderboard_entries, markdown, markdown_to_html_tables,
                                 merge_tree_png)
from tinylm.io import check_output, write_text_atomic


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def loss_curves(run_dir) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def benchmarks_over_steps(tournament) -> str | None:
    """Each metric over the checkpoints' steps, with the champion as a dashed line."""
    from tinylm.eval.leaderboard import Entry, plot_png

    entries = [e for e in leaderboard_entries(tournament) if e.step is not None]
    if not entries:
        return None
    champion = tournament.ranked()[0]
    entries.append(Entry(f"champion ({champion.name})", None, champion.metrics, "champion"))
    return base64.b64encode(plot_png(entries)).decode("ascii")


def write_run_report(pipeline):
    tournament = pipeline._tournament()
    out = pipeline.out
    card = (out / "MODEL_CARD.md").read_text()
    samples = json.loads((out / "samples.json").read_text())
    sections = [f"<h1>tinylm run: {html.escape(pipeline.recipe.name)}</h1>",
                f"<p>{html.escape(pipeline.recipe.description)}</p>",
                "<h2>Loss</h2>", f"<img alt='loss curves' src='data:image/png;base64,"
                                 f"{loss_curves(out)}'>"]
    steps_png = benchmarks_over_steps(tournament)
    if steps_png:
        sections += ["<h2>Benchmarks over training</h2>",
                     f"<img alt='benchmarks over steps' src='data:image/png;base64,{steps_png}'"
                     f" style='max-width:100%'>"]
    heldout = heldout_markdown(load_heldout(out))
    if heldout:  # the held-out table first: the numbers a user can expect
        sections.append(markdown_to_html_tables("\n".join(heldout)))
    tree = base64.b64encode(merge_tree_png(tournament)).decode("ascii")
    sections += [markdown_to_html_tables(markdown(tournament).replace("# Tournament report",
                                                                      "## Tournament")),
                 "<h2>Merge tree</h2>",
                 f"<img alt='merge tree' src='data:image/png;base64,{tree}' "
                 f"style='max-width:100%'>", "<h2>Samples</h2>",
                 f"<p><code>{html.escape(json.dumps(samples['settings']))}</code></p>"]
    for s in samples["samples"]:
        sections.append(f"<p><b>{html.escape(s['prompt'])}</b>{html.escape(s['completion'])}"
                        f"</p>")
    sections += ["<h2>Model card</h2>", f"<pre>{html.escape(card)}</pre>"]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>tinylm run "
            f"{html.escape(pipeline.recipe.name)}</title><style>body{{font-family:system-ui,"
            "sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:"
            "collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}pre{white-space:"
            "pre-wrap;background:#f6f6f6;padding:1em}</style></head><body>"
            + "\n".join(sections) + "</body></html>")
    path = check_output(out / "report.html", "file")  # a report.html of the user's is kept
    write_text_atomic(path, page)
    return path
