"""A planted-fault corpus: clean rows from ../shared/data plus every fault the audit must find.

Clean rows: the first `c4` C4-sample documents, all 150 FineWeb-Edu documents, the first
`tinystories` TinyStories stories, each under its true source name. Planted (counts are
settings), each placed after the row it copies so the copy, not the original, is the duplicate:

    exact_duplicate   a clean row again, half verbatim, half re-cased and re-spaced
    near_duplicate    a clean row of 100+ words with a few words substituted, inserted or
                      deleted (one edit per 60 words), kept only if the word-5-gram Jaccard
                      with the original stays >= 0.8 (the detector's threshold is 0.7)
    clone             a WikiText-2 validation article (the "other corpus", audited with
                      --against wikitext-2), relabelled c4 or fineweb-edu; a third edited
    contamination:*   a held-out TinyStories story with an ARC-Easy test question and its
                      answer, a BLiMP sentence_good (of 4+ words: shorter ones are not
                      indexed, see contamination.py), or a WikiText-2 test line (13+ words
                      once normalised) inserted between two of its sentences
    pii:email/phone   a held-out story with a fake email / phone number (3 formats) in it
    secret:*          a held-out story with an AWS-style access key id or a PEM private key
    private           a row of the "private" set (TinyStories validation stories, written as
                      its own dataset folder and audited with --private), relabelled
                      tinystories; a third edited (when the edit keeps Jaccard >= 0.8)
    relabelled_unreferenced  a C4 document claimed as tinystories with no reference corpus
                      to catch it: only the statistical profile can (measured, not required)

The ground truth is returned (and written to truth.json beside, not inside, the dataset), so
the detectors never see it. `score` compares an audit's findings with it.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import string
from dataclasses import asdict, dataclass
from pathlib import Path

from tinylm.data.curate.dataset import DatasetWriter, make_row
from tinylm.data.curate.settings import NGRAM, ContaminationConfig
from tinylm.data.curate.textnorm import dedup_text, lm_eval_words, shingles

CLONE_CORPUS = "wikitext-2"
MIN_SHORT_WORDS = ContaminationConfig().min_short_words
PRIVATE_NAME = "lab-private"
REQUIRED = ("exact_duplicate", "near_duplicate", "clone", "contamination:arc-easy",
            "contamination:blimp", "contamination:wikitext-2", "pii:email", "pii:phone",
            "secret:aws", "secret:private_key", "private")


@dataclass(frozen=True)
class PlantConfig:
    c4: int = 400
    tinystories: int = 1000
    exact: int = 30
    near: int = 30
    clones: int = 21
    contamination: int = 15     # per benchmark
    pii: int = 10               # per kind (email, phone, aws key, private key)
    private: int = 15
    relabelled: int = 15
    seed: int = 16


def _docs(name: str, data_dir, count: int | None = None, skip: int = 0) -> list[str]:
    from tinylm.data.sources import resolve_dataset

    docs = resolve_dataset(name, data_dir).documents()
    return list(itertools.islice(docs, skip, None if count is None else skip + count))


def jaccard(a: str, b: str) -> float:
    sa, sb = set(shingles(a)), set(shingles(b))
    return len(sa & sb) / max(1, len(sa | sb))


def edit(text: str, rng: random.Random, per_words: int = 60) -> str:
    """A few word edits (substitute, insert, delete), one per `per_words` words."""
    words = text.split(" ")
    fillers = ["really", "quite", "also", "very", "still", "often", "maybe", "indeed"]
    for _ in range(max(1, len(words) // per_words)):
        at = rng.randrange(1, len(words) - 1)
        action = rng.choice(("sub", "ins", "del"))
        if action == "sub":
            words[at] = rng.choice(fillers)
        elif action == "ins":
            words.insert(at, rng.choice(fillers))
        else:
            del words[at]
    return " ".join(words)


def insert_sentence(story: str, extra: str, rng: random.Random) -> str:
    parts = story.split(". ")
    at = rng.randrange(1, len(parts)) if len(parts) > 1 else 1
    return ". ".join(parts[:at]) + ". " + extra.strip() + " " + ". ".join(parts[at:])


def fake_aws_key(rng: random.Random) -> str:
    return "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits)
                            for _ in range(16))


def fake_pem(rng: random.Random) -> str:
    body = base64.b64encode(bytes(rng.randrange(256) for _ in range(180))).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(lines) + \
        "\n-----END RSA PRIVATE KEY-----"


def fake_phone(rng: random.Random, n: int) -> str:
    a, b = rng.randrange(200, 999), rng.randrange(1000, 9999)
    return [f"(555) {a}-{b}", f"555.{a}.{b}", f"+44 20 7946 {b}"][n % 3]


def build(out: Path, data_dir=None, config: PlantConfig = PlantConfig(),
          force: bool = False) -> dict:
    """Write OUT/corpus (the dataset), OUT/private (the private set), OUT/truth.json."""
    from tinylm.data.sources import resolve_data_dir
    from tinylm.eval.tasks import read_jsonl
    from tinylm.eval.tasks.arc import answer_index

    rng = random.Random(config.seed)
    folder = resolve_data_dir(data_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean = ([("c4", "c4-sample.00000-of-00001.json.gz", n, t) for n, t in
              enumerate(_docs("c4", data_dir, config.c4), 1)] +
             [("fineweb-edu", "fineweb-edu-sample10BT-150docs-annotated.csv", n, t) for n, t in
              enumerate(_docs("fineweb-edu", data_dir), 1)] +
             [("tinystories", "TinyStories-train-v1-raw-first2MiB.txt.gz", n, t) for n, t in
              enumerate(_docs("tinystories", data_dir, config.tinystories), 1)])
    rng.shuffle(clean)
    held_out = iter(_docs("tinystories", data_dir, 400, skip=config.tinystories))
    rows = [(float(i), make_row(t, s, f, n)) for i, (s, f, n, t) in enumerate(clean)]
    truth: dict[str, str] = {}
    counter = itertools.count(1)

    def plant(kind: str, text: str, source: str, after: int | None = None) -> None:
        row = make_row(text, source, "batch-2.jsonl", next(counter))
        low = after + 0.5 if after is not None else 0.0
        rows.append((rng.uniform(low, len(clean)), row))
        truth[row["id"]] = kind

    for i in rng.sample(range(len(clean)), config.exact):
        source, _, _, text = clean[i]
        copy = text if i % 2 else "  ".join(text.upper().split(" "))
        plant("exact_duplicate", copy, source, after=i)
    long_rows = [i for i, c in enumerate(clean) if len(c[3].split()) >= 100]
    planted_near = 0
    for i in rng.sample(long_rows, len(long_rows)):
        if planted_near == config.near:
            break
        source, _, _, text = clean[i]
        copy = edit(text, rng)
        if jaccard(copy, text) >= 0.8 and dedup_text(copy) != dedup_text(text):
            plant("near_duplicate", copy, source, after=i)
            planted_near += 1
    articles = _docs(CLONE_CORPUS, data_dir, config.clones)
    for n, article in enumerate(articles):
        plant("clone", edit(article, rng, 200) if n % 3 == 2 else article,
              ("c4", "fineweb-edu")[n % 2])
    arc = read_jsonl(folder / "arc-easy" / "ARC-Easy-test.jsonl")
    for item in rng.sample(arc, config.contamination):
        qa = f"{item['question']} {item['choices']['text'][answer_index(item)]}."
        plant("contamination:arc-easy", insert_sentence(next(held_out), qa, rng),
              "tinystories")
    blimp_files = sorted((folder / "blimp").glob("*.jsonl"))
    for path in rng.sample(blimp_files, config.contamination):
        pair = rng.choice([p for p in read_jsonl(path)
                           if len(lm_eval_words(p["sentence_good"])) >= MIN_SHORT_WORDS])
        plant("contamination:blimp", insert_sentence(next(held_out), pair["sentence_good"],
                                                     rng), "tinystories")
    test_lines = [line for line in (folder / "wikitext-2" / "wiki.test.raw").read_text(
        encoding="utf-8").split("\n") if len(lm_eval_words(line)) >= NGRAM and
        not line.strip().startswith("=")]
    for line in rng.sample(test_lines, config.contamination):
        plant("contamination:wikitext-2", insert_sentence(next(held_out), line, rng), "c4")
    for n in range(config.pii):
        name = rng.choice(["anna", "ben", "chloe", "dev", "emil"])
        plant("pii:email", insert_sentence(
            next(held_out), f"Write to {name}.{rng.randrange(99)}@example-mail.com today.",
            rng), "tinystories")
        plant("pii:phone", insert_sentence(
            next(held_out), f"Call {fake_phone(rng, n)} for help.", rng), "tinystories")
        plant("secret:aws", insert_sentence(
            next(held_out), f"The key was {fake_aws_key(rng)} all along.", rng), "tinystories")
        plant("secret:private_key", next(held_out) + "\n" + fake_pem(rng), "tinystories")
    private_docs = _docs("tinystories-valid", data_dir, 200)
    with DatasetWriter(out / "private", name=PRIVATE_NAME, author="lab", force=force) as w:
        for n, text in enumerate(private_docs, 1):
            w.write(make_row(text, PRIVATE_NAME, "TinyStories-valid-prefix.txt", n))
    for n, text in enumerate(rng.sample(private_docs, config.private)):
        copy = edit(text, rng, 60) if n % 3 == 2 else text
        plant("private", copy if jaccard(copy, text) >= 0.8 else text, "tinystories")
    for text in _docs("c4", data_dir, config.relabelled, skip=config.c4):
        plant("relabelled_unreferenced", text, "tinystories")
    rows.sort(key=lambda kr: kr[0])
    card = {"claim": "C4 + FineWeb-Edu + TinyStories, deduplicated, no benchmark text",
            "sources": ["c4", "fineweb-edu", "tinystories"]}
    with DatasetWriter(out / "corpus", name="planted", author="pat", card=card,
                       rows_per_part=500, force=force) as w:
        for _, row in rows:
            w.write(row)
    clean_ids = [r["id"] for _, r in rows if r["id"] not in truth]
    record = {"format": "tinylm-planted-truth", "config": asdict(config), "truth": truth,
              "clean": clean_ids}
    (out / "truth.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


# ------------------------------------------------------------------------------ scoring

def flagged_by_kind(payload: dict) -> dict[str, set[str]]:
    """Row ids each detector flagged, by planted-fault kind."""
    f = payload["findings"]
    contamination: dict[str, set] = {}
    out = {
        "exact_duplicate": {d["row"] for d in f["exact_duplicates"]},
        "near_duplicate": {d["row"] for d in f["near_duplicates"]},
        "clone": {h["row"] for hits in f["clones"].values() for h in hits},
        "private": {h["row"] for hits in f["private"].values() for h in hits},
        "pii:email": set(f["pii"].get("email", {}).get("ids", [])),
        "pii:phone": set(f["pii"].get("phone", {}).get("ids", [])),
        "secret:aws": set(f["secrets"].get("secret: AWS Access Key", {}).get("ids", [])),
        "secret:private_key": set(f["secrets"].get("secret: Private Key", {}).get("ids", [])),
        "secret:any": {i for e in f["secrets"].values() for i in e["ids"]},
        "relabelled_unreferenced": {r["row"] for r in f["profile_mismatch"]},
        "relabelled": {r["row"] for r in f["relabelled"]},
    }
    for row_id, benchmarks in f["contamination"]["by_row"].items():
        for benchmark in benchmarks:
            contamination.setdefault(f"contamination:{benchmark}", set()).add(row_id)
    out.update(contamination)
    out["contamination:any"] = set(f["contamination"]["by_row"])
    return out


def score(record: dict, payload: dict, verify_duplicate=None) -> dict:
    """Recall per planted kind and false positives on the clean rows, per detector.

    A clean row flagged as a duplicate is a *natural* finding, not a false positive, when
    `verify_duplicate(row_id, of_id, kind)` confirms it (its text equals / is >= 0.7 Jaccard
    with the row it was matched to); clean rows with an email or phone number are natural
    PII, counted apart. Everything else flagged on a clean row is a false positive."""
    truth, clean = record["truth"], set(record["clean"])
    flagged = flagged_by_kind(payload)
    recall = {}
    for kind in sorted(set(truth.values())):
        planted = {r for r, k in truth.items() if k == kind}
        hit = planted & flagged.get(kind, set())
        if kind == "near_duplicate":  # an edit that normalises equal is found as exact
            hit = planted & (flagged["near_duplicate"] | flagged["exact_duplicate"])
        recall[kind] = {"planted": len(planted), "found": len(hit),
                        "recall": len(hit) / max(1, len(planted)),
                        "missed": sorted(planted - hit)[:5]}
    duplicates = {d["row"]: (d["of"], "exact") for d in payload["findings"]["exact_duplicates"]}
    duplicates.update({d["row"]: (d["of"], "near") for d in
                       payload["findings"]["near_duplicates"]})
    natural_dups = {r for r in clean & set(duplicates)
                    if verify_duplicate is not None and verify_duplicate(r, *duplicates[r])}
    detectors = {
        "duplicate": (flagged["exact_duplicate"] | flagged["near_duplicate"]) - natural_dups,
        "clone": flagged["clone"], "private": flagged["private"],
        "contamination": flagged["contamination:any"],
        "secret": flagged["secret:any"], "relabelled": flagged["relabelled"],
        "profile": flagged["relabelled_unreferenced"],
    }
    false_positives = {name: sorted(ids & clean) for name, ids in detectors.items()}
    any_fp = set().union(*[set(v) for v in false_positives.values()])
    natural_pii = clean & (flagged["pii:email"] | flagged["pii:phone"])
    return {"clean_rows": len(clean), "recall": recall,
            "false_positives": {k: len(v) for k, v in false_positives.items()},
            "false_positive_examples": {k: v[:5] for k, v in false_positives.items() if v},
            "false_positive_rows": len(any_fp),
            "false_positive_rate": len(any_fp) / max(1, len(clean)),
            "natural_duplicates": len(natural_dups), "natural_pii_rows": len(natural_pii)}
