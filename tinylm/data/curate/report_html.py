"""checks/audit.html: the audit as one self-contained page (inline CSS, no scripts, no
external requests), headline figures first. Every value is escaped: rows are untrusted text.
Each headline figure sits in an element with a stable id (`fig-rows`, `fig-exact-rate`, ...)
so a test can read it back from the rendered DOM."""

from __future__ import annotations

import html
import json

from tinylm.data.curate.dataset import Dataset

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}
.verdict{padding:.6em 1em;border-radius:4px;font-weight:600}
.pass{background:#e3f4e1;color:#14531a} .fail{background:#fbe3e1;color:#7a1610}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top} th{background:#f4f4f4} td.num{text-align:right}
code,.ex{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _table(headers: list[str], rows: list[list], ids: list[str] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for k, row in enumerate(rows):
        row_id = f' id="{esc(ids[k])}"' if ids else ""
        cells = "".join(f'<td class="{"num" if isinstance(c, (int, float)) else ""}">'
                        f"{esc(c)}</td>" for c in row)
        body.append(f"<tr{row_id}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def headline(figures: dict) -> list[tuple[str, str, str]]:
    """(element id, label, shown value) of each headline figure."""
    clones = sum(figures["clone_rows"].values())
    private = sum(figures["private_rows"].values())
    return [
        ("fig-rows", "rows", str(figures["rows"])),
        ("fig-exact-rate", "exact-duplicate rows",
         f'{figures["exact_duplicate_rows"]} ({_pct(figures["exact_duplicate_rate"])})'),
        ("fig-near-rate", "near-duplicate rows",
         f'{figures["near_duplicate_rows"]} ({_pct(figures["near_duplicate_rate"])})'),
        ("fig-clusters", "duplicate clusters", str(figures["duplicate_clusters"])),
        ("fig-clones", "rows cloning another corpus", str(clones)),
        ("fig-private", "rows from a private set", str(private)),
        ("fig-contaminated", "benchmark-contaminated rows", str(figures["contaminated_rows"])),
        ("fig-secrets", "rows with secrets", str(figures["secret_rows"])),
        ("fig-pii", "rows with PII (email/phone)",
         f'{figures["pii_rows"]} ({_pct(figures["pii_row_rate"])})'),
        ("fig-relabelled", "relabelled rows (copy of X claimed as Y)",
         str(figures["relabelled_rows"])),
        ("fig-profile", "rows closer to another source's profile",
         str(figures["profile_mismatch_rows"])),
    ]


def render(dataset: Dataset, payload: dict) -> str:
    figures, findings = payload["figures"], payload["findings"]
    verdict = "PASSED" if payload["passed"] else "FAILED"
    head = (f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<meta name='generator' content='tinylm data audit'>"
            f"<title>tinylm audit: {esc(dataset.name)}</title><style>{STYLE}</style>"
            f"</head><body>")
    manifest = (f"<p>manifest sha256 <code id='manifest'>{esc(dataset.manifest_sha256)}"
                f"</code>; author {esc(dataset.author)}; written by tinylm.</p>")
    css = "pass" if payload["passed"] else "fail"
    parts = [head, f"<h1>Audit of dataset <code>{esc(dataset.name)}</code></h1>", manifest,
             f"<p id='verdict' class='verdict {css}'>{verdict}</p>"]
    if payload["failures"]:
        parts.append("<ul id='failures'>" + "".join(f"<li>{esc(f)}</li>"
                                                    for f in payload["failures"]) + "</ul>")
    parts.append("<h2>Is this what its card says it is?</h2>")
    items = headline(figures)
    parts.append(_table(["figure", "value"], [[label, value] for _, label, value in items],
                        [i for i, _, _ in items]))
    card = findings["card"]
    if card:
        parts.append(_table(["card claims", "card", "data", "agrees"],
                            [[c["claim"], c["card"], c["actual"], "yes" if c["ok"] else "NO"]
                             for c in card]))
    parts.append("<h2>Rows per claimed source</h2>")
    parts.append(_table(["source", "rows"], [[s, n] for s, n in
                                             figures["rows_per_source"].items()],
                        [f"src-{s}" for s in figures["rows_per_source"]]))
    parts.extend(_sections(figures, findings))
    parts.append("<h2>Settings and thresholds</h2><pre class='ex'>" + esc(json.dumps(
        {"thresholds": payload["thresholds"], "settings": payload["settings"]}, indent=1))
        + "</pre></body></html>")
    return "\n".join(parts)


def _sections(figures: dict, findings: dict) -> list[str]:
    out = ["<h2>Largest duplicate clusters</h2>"]
    out.append(_table(["first row", "size", "exact", "near", "excerpt", "members"],
                      [[c["representative"], c["size"], c["exact"], c["near"], c["excerpt"],
                        "; ".join(f'{m["id"]} ({m["kind"]}, J={m["jaccard"]})'
                                  for m in c["members"])]
                       for c in findings["largest_clusters"]]))
    out.append("<h2>Clones of other corpora, private-set rows</h2>")
    hits = [[kind, name, len(v), "; ".join(f'{h["row"]} = {h["document"]}' for h in v[:5])]
            for kind, group in (("clone", findings["clones"]), ("private", findings["private"]))
            for name, v in group.items()]
    out.append(_table(["kind", "corpus", "rows", "examples"], hits))
    out.append("<h2>Benchmark contamination (13-gram, lm-eval convention)</h2>")
    out.append(_table(["benchmark", "rows", "examples"],
                      [[b, n, " | ".join(f'{e["row"]}: "{e["match"]}"' for e in
                                         findings["contamination"]["examples"][b])]
                       for b, n in figures["contaminated_rows_by_benchmark"].items()],
                      [f"bench-{b}" for b in figures["contaminated_rows_by_benchmark"]]))
    out.append("<h2>Secrets and PII (values redacted)</h2>")
    rows = [[kind, e["rows"], " | ".join(f'{x["row"]}: {x["excerpt"]}' for x in e["examples"])]
            for group in (findings["secrets"], findings["pii"]) for kind, e in group.items()]
    out.append(_table(["kind", "rows", "examples"], rows))
    out.append("<h2>Mismatched sources</h2>")
    out.append(_table(["row", "claimed", "is a copy of"],
                      [[r["row"], r["claimed"], f'{r["copied_from"]} ({r["document"]})']
                       for r in findings["relabelled"][:20]]))
    out.append(f"<p>Profiled sources: {esc(', '.join(figures['profiled_sources']) or 'none')}"
               f" (rows closer to another source's character profile; evidence, not proof)."
               f"</p>")
    out.append(_table(["row", "claimed", "looks like", "sim. claimed", "sim. other"],
                      [[r["row"], r["claimed"], r["looks_like"], r["claimed_similarity"],
                        r["other_similarity"]] for r in findings["profile_mismatch"][:20]]))
    return out
