"""The two-person publish gate: every refusal, and the one way through."""

import json

import pytest
import yaml

from tests.conftest import run_cli
from tests.data.curate.conftest import passing_audit
from tinylm.data.curate.dataset import build_manifest, open_dataset, write_check
from tinylm.data.curate.publish import publish
from tinylm.data.curate.review import review
from tinylm.errors import TinyLMError


def quiet(*_):
    pass


def test_refusals_then_success(tmp_path, stories):
    registry = tmp_path / "registry"
    dataset = open_dataset(stories)

    def refused(match):
        with pytest.raises(TinyLMError, match=match):
            publish(stories, str(registry), log=quiet)
        assert not (registry / "stories").exists()

    refused("no audit of these bytes; run `tinylm data audit`")
    write_check(dataset, "audit", {"passed": False, "thresholds": {"exact_dup_rate": 0.01},
                                   "figures": {"exact_dup_rate": 0.2}})
    refused(r"the audit failed: exact_dup_rate 0.2 > 0.01")
    write_check(dataset, "audit", {"passed": False, "failures": ["12 rows clone c4"]})
    refused("the audit failed: 12 rows clone c4")
    passing_audit(dataset)
    refused("no review; a second person must sign off")

    with pytest.raises(TinyLMError, match="ana is the author of stories"):
        review(stories, "ana")
    (stories / "reviews").mkdir()
    (stories / "reviews" / "ana.json").write_text(json.dumps({  # a self-review by hand
        "format": "tinylm-dataset-review", "reviewer": "ana",
        "manifest_sha256": dataset.manifest_sha256}))
    refused("only a self-review by its author ana")

    review(stories, "bob", note="sources checked")
    passing_audit(dataset, rows=41)  # re-audited after bob looked
    refused("the audit changed .* after the review")
    review(stories, "bob", note="sources checked")

    target = publish(stories, str(registry), log=quiet)
    assert target == str(registry / "stories" / "v1")
    copy = open_dataset(registry / "stories" / "v1" / "data")  # verifies every hash
    assert copy.manifest_sha256 == dataset.manifest_sha256
    card = (registry / "stories" / "v1" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc-by-4.0" and front["tinylm"]["version"] == "v1"
    assert front["tinylm"]["audit"]["figures"]["rows"] == 41
    assert front["tinylm"]["audit"]["passed"] is True
    assert [r["reviewer"] for r in front["tinylm"]["reviews"]] == ["bob"]
    assert front["tinylm"]["reviews"][0]["note"] == "sources checked"
    assert front["tinylm"]["manifest_sha256"] == dataset.manifest_sha256
    index = json.loads((registry / "index.json").read_text())
    assert [(e["name"], e["version"], e["reviewers"]) for e in index["datasets"]] == \
        [("stories", "v1", ["bob"])]

    with pytest.raises(TinyLMError, match="already published as stories/v1"):
        publish(stories, str(registry), log=quiet)
    with pytest.raises(TinyLMError, match="already published; a published version is never"):
        publish(stories, str(registry), version="v1", log=quiet)


def test_files_changed_after_review(tmp_path, stories):
    dataset = open_dataset(stories)
    passing_audit(dataset)
    review(stories, "bob")
    part = dataset.parts[0]
    original = part.read_bytes()
    part.write_bytes(original.replace(b"little", b"large", 1))
    with pytest.raises(TinyLMError, match="changed since its manifest.*part-00000.jsonl was "
                                          "modified"):
        publish(stories, str(tmp_path / "reg"), log=quiet)
    with pytest.raises(TinyLMError, match="was modified"):
        review(stories, "carol")  # a reviewer cannot sign off changed bytes either
    # someone rewrites the manifest to match, and re-audits: the review still does not count
    manifest = build_manifest(stories)
    (stories / "manifest.json").write_text(json.dumps(manifest))
    passing_audit(open_dataset(stories))
    with pytest.raises(TinyLMError, match="the files changed after review"):
        publish(stories, str(tmp_path / "reg"), log=quiet)
    assert not (tmp_path / "reg").exists()


def test_cli_publish_and_registry_rules(tmp_path, stories, capsys, monkeypatch):
    """The real command for a refusal and the success; the rest through main() here."""
    from tinylm.cli import main

    passing_audit(open_dataset(stories))
    proc = run_cli("data", "review", str(stories), "--reviewer", "ana", check=False)
    assert proc.returncode == 2 and "two-person rule" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert main(["data", "review", str(stories), "--reviewer", "bob"]) == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["data", "publish", str(stories), "--to", str(foreign)]) == 2
    assert "not a tinylm registry" in capsys.readouterr().err
    assert main(["data", "publish", str(stories), "--to", "hf://lab/stories",
                 "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "dry run" in dry and "data/rows/part-00000.jsonl" in dry
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["data", "publish", str(stories), "--to", "hf://lab/stories"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    out = run_cli("data", "publish", str(stories), "--to", str(tmp_path / "reg")).stdout
    assert "published stories version v1" in out and "reviewed by bob" in out
    assert (foreign / "notes.txt").read_text() == "mine"
