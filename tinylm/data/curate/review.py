"""Sign-offs and the two-person gate: what `tinylm data publish` asks before anything is copied.

The lab's rule (../shared/docs/model-cards/glint-research-blog.txt): no dataset goes public
without a second person checking it first; no solo pushes. So a review is a record bound to
exactly the bytes reviewed, and publishing needs all of:

  1. the files on disk are the manifest's (`Dataset.verify`): nothing changed since it was made;
  2. an audit of these bytes (`checks/audit.json` for this manifest) that passed;
  3. a review by someone other than the dataset's author, of this manifest and of this audit.

A review (`reviews/NAME.json`) holds the manifest sha256 and the sha256 of the audit file the
reviewer saw. Any change to the data makes a new manifest (every step writes a new folder), so
an old review no longer matches and the dataset must be reviewed again; so must a re-audited
one. The author cannot review their own dataset; the gate refuses a dataset whose only reviews
are the author's all the same (a review file can be written by hand).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tinylm.data.curate.dataset import Dataset, now_utc, open_dataset, read_check
from tinylm.errors import TinyLMError
from tinylm.io import sha256_file, write_text_atomic

REVIEW_FORMAT = "tinylm-dataset-review"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def check_person(name: str, flag: str = "--reviewer") -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise TinyLMError(f"{flag} {name!r}: a name of letters, digits and . _ @ - (at most 64)")
    return name


def audit_sha256(dataset: Dataset) -> str | None:
    """The hash of the audit file when it is an audit of these bytes, else None."""
    if read_check(dataset, "audit") is None:
        return None
    return sha256_file(dataset.path / "checks" / "audit.json")


def review(path: str | Path, reviewer: str, note: str = "") -> Path:
    """Record `reviewer`'s sign-off of the dataset's current bytes; refuses changed bytes and
    a self-review."""
    check_person(reviewer)
    dataset = open_dataset(path)  # verify(): refuses bytes that differ from the manifest
    if dataset.author is None:
        raise TinyLMError(f"{dataset.path}: the dataset names no author, so a second person "
                          f"cannot be told from the first; ingest it again with --author")
    if reviewer == dataset.author:
        raise TinyLMError(f"{reviewer} is the author of {dataset.name}; a review must come "
                          f"from someone else (the two-person rule)")
    audit = read_check(dataset, "audit")
    record = {"format": REVIEW_FORMAT, "reviewer": reviewer, "dataset": dataset.name,
              "author": dataset.author, "manifest_sha256": dataset.manifest_sha256,
              "audit_sha256": audit_sha256(dataset),
              "audit_passed": None if audit is None else bool(audit.get("passed")),
              "note": note, "signed": now_utc()}
    out = dataset.path / "reviews" / f"{reviewer}.json"
    write_text_atomic(out, json.dumps(record, indent=1, ensure_ascii=False))
    return out


def read_reviews(dataset: Dataset) -> list[dict]:
    folder = dataset.path / "reviews"
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("format") == REVIEW_FORMAT:
            found.append(record)
    return found


def publish_gate(dataset: Dataset) -> tuple[dict, list[dict]]:
    """(the audit, the reviews that count), or a TinyLMError saying which rule is unmet."""
    dataset.verify()
    audit = read_check(dataset, "audit")
    if audit is None:
        stale = (dataset.path / "checks" / "audit.json").is_file()
        raise TinyLMError(f"{dataset.name}: no audit of these bytes"
                          + (" (checks/audit.json was computed on other bytes)" if stale else "")
                          + "; run `tinylm data audit` first")
    if audit.get("passed") is not True:
        raise TinyLMError(f"{dataset.name}: the audit failed: {audit_failures(audit)}")
    if dataset.author is None:
        raise TinyLMError(f"{dataset.name}: the dataset names no author; the two-person rule "
                          f"needs one")
    reviews = read_reviews(dataset)
    if not reviews:
        raise TinyLMError(f"{dataset.name}: no review; a second person must sign off first "
                          f"(`tinylm data review {dataset.path} --reviewer NAME`)")
    current = [r for r in reviews if r.get("manifest_sha256") == dataset.manifest_sha256]
    if not current:
        raise TinyLMError(f"{dataset.name}: the files changed after review (reviewed manifest "
                          f"{reviews[0].get('manifest_sha256', '?')[:12]}, now "
                          f"{dataset.manifest_sha256[:12]}); it must be reviewed again")
    others = [r for r in current if r.get("reviewer") != dataset.author]
    if not others:
        raise TinyLMError(f"{dataset.name}: only a self-review by its author "
                          f"{dataset.author}; a second person must sign off")
    seen_audit = audit_sha256(dataset)
    valid = [r for r in others if r.get("audit_sha256") == seen_audit]
    if not valid:
        raise TinyLMError(f"{dataset.name}: the audit changed (or was made) after the review; "
                          f"the reviewer must see this audit and sign off again")
    return audit, valid


def audit_failures(audit: dict) -> str:
    """What the audit says failed, in one line."""
    for key in ("failures", "failed", "reasons"):
        found = audit.get(key)
        if found:
            items = found if isinstance(found, list) else [found]
            return "; ".join(str(i) for i in items[:5])
    figures, thresholds = audit.get("figures", {}), audit.get("thresholds", {})
    over = [f"{k} {figures[k]} > {v}" for k, v in thresholds.items()
            if isinstance(figures.get(k), (int, float)) and isinstance(v, (int, float))
            and figures[k] > v]
    return "; ".join(over) or "passed is not true"
