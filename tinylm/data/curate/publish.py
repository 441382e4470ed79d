"""`tinylm data publish`: copy a reviewed, audited dataset into a registry, with its card.

A local registry is a folder:

    REGISTRY/
      index.json                {"format": "tinylm-dataset-registry", "datasets": [entry...]}
      NAME/VERSION/README.md    the dataset card
      NAME/VERSION/data/        the dataset folder as reviewed (rows, dataset.json, manifest,
                                checks, reviews): `open_dataset` verifies it as it was; the
                                card lies outside it, as it is not part of the reviewed bytes

A published version is never replaced: publishing to an existing NAME/VERSION is refused, and
so is publishing bytes the registry already holds under another version. The copy is made in
a temporary sibling, its manifest recomputed and compared with the reviewed one, then renamed
into place; the index is written last (atomically).

`--to hf://ORG/NAME` sends the same folder to the Hugging Face hub as a dataset repository,
tagged VERSION, when `huggingface_hub` is installed and the hub is reachable; `--dry-run`
prints what would go without sending anything. Here (offline) it refuses in one line.

The card (README.md) opens with YAML front matter in the Hugging Face dataset-card convention
(pretty_name, license, tags, source_datasets) plus a `tinylm` block: the manifest hash, the
audit's headline figures and thresholds, the review records, and the provenance (sources with
their sha256, the steps that made the data). Values are written as JSON, which YAML reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from tinylm.data.curate.dataset import Dataset, now_utc, open_dataset
from tinylm.data.curate.review import publish_gate
from tinylm.errors import TinyLMError
from tinylm.io import write_text_atomic

REGISTRY_FORMAT = "tinylm-dataset-registry"
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
COPIED = ("rows", "dataset.json", "manifest.json", "checks", "reviews")


def publish(path: str | Path, to: str, version: str | None = None, dry_run: bool = False,
            log=print) -> str:
    """Publish the dataset at `path` to `to` (a registry folder or hf://ORG/NAME); returns
    where it went."""
    dataset = open_dataset(path)
    if version is not None and not VERSION_NAME.match(version):
        raise TinyLMError(f"--version {version!r}: letters, digits and . _ - only")
    if not VERSION_NAME.match(dataset.name):
        raise TinyLMError(f"dataset name {dataset.name!r} cannot name a registry folder")
    audit, reviews = publish_gate(dataset)  # refuses unless audited and second-reviewed
    if to.startswith("hf://"):
        version = version or "v1"
        return publish_to_hub(dataset, to[len("hf://"):], version,
                              dataset_card(dataset, audit, reviews, version), dry_run, log)
    registry = check_registry(Path(to))
    version = version or next_version(registry, dataset.name)
    target = registry / dataset.name / version
    if target.exists():
        raise TinyLMError(f"{target} is already published; a published version is never "
                          f"replaced (pass another --version)")
    already = [e for e in read_index(registry)
               if e.get("manifest_sha256") == dataset.manifest_sha256]
    if already:
        raise TinyLMError(f"these bytes are already published as {already[0]['name']}/"
                          f"{already[0]['version']}")
    if dry_run:
        log(f"would publish {dataset.name} ({dataset.row_count()} rows) to {target}")
        return str(target)
    _copy_verified(dataset, target, dataset_card(dataset, audit, reviews, version))
    add_to_index(registry, {"name": dataset.name, "version": version,
                            "path": f"{dataset.name}/{version}/data",
                            "manifest_sha256": dataset.manifest_sha256,
                            "rows": dataset.row_count(), "author": dataset.author,
                            "reviewers": [r["reviewer"] for r in reviews],
                            "audit_passed": True, "published": now_utc()})
    log(f"published {dataset.name} version {version} to {target} (reviewed by "
        f"{', '.join(r['reviewer'] for r in reviews)})")
    return str(target)


# ------------------------------------------------------------------------------ registry

def check_registry(registry: Path) -> Path:
    if registry.exists() and not registry.is_dir():
        raise TinyLMError(f"--to {registry} is a file; a registry is a folder")
    if registry.is_dir() and any(registry.iterdir()) and not (registry / "index.json").is_file():
        raise TinyLMError(f"--to {registry} is a folder that is not a tinylm registry (no "
                          f"index.json); choose an empty or new folder")
    if (registry / "index.json").is_file():
        read_index(registry)  # refuses a damaged or foreign index
    elif not registry.parent.is_dir():
        raise TinyLMError(f"--to {registry}: its parent folder does not exist")
    return registry


def read_index(registry: Path) -> list[dict]:
    path = registry / "index.json"
    if not path.is_file():
        return []
    try:
        index = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        raise TinyLMError(f"{path}: damaged registry index") from None
    if not isinstance(index, dict) or index.get("format") != REGISTRY_FORMAT:
        raise TinyLMError(f"{path} is not a tinylm registry index; it is never replaced")
    return list(index.get("datasets", []))


def add_to_index(registry: Path, entry: dict) -> None:
    entries = [*read_index(registry), entry]
    write_text_atomic(registry / "index.json",
                      json.dumps({"format": REGISTRY_FORMAT, "datasets": entries}, indent=1))


def next_version(registry: Path, name: str) -> str:
    """v1, v2, ...: one more than the highest vN the registry holds for `name`."""
    numbers = [int(m.group(1)) for e in read_index(registry) if e.get("name") == name
               for m in [re.match(r"^v(\d+)$", str(e.get("version")))] if m]
    folder = registry / name
    if folder.is_dir():
        numbers += [int(p.name[1:]) for p in folder.iterdir() if re.match(r"^v\d+$", p.name)]
    return f"v{max(numbers, default=0) + 1}"


def _copy_verified(dataset: Dataset, target: Path, card: str) -> None:
    from tinylm.data.curate.dataset import manifest_difference

    temp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    temp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(temp, ignore_errors=True)
    try:
        (temp / "data").mkdir(parents=True)
        for name in COPIED:
            source = dataset.path / name
            if source.is_dir():
                shutil.copytree(source, temp / "data" / name)
            elif source.is_file():
                shutil.copy2(source, temp / "data" / name)
        problem = manifest_difference(temp / "data", dataset.manifest)
        if problem:
            raise TinyLMError(f"the copy in {temp} does not match the reviewed manifest "
                              f"({problem}); nothing was published")
        write_text_atomic(temp / "README.md", card)
        os.replace(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------- card

def dataset_card(dataset: Dataset, audit: dict, reviews: list[dict], version: str) -> str:
    """README.md: YAML front matter (JSON values) and a short human summary."""
    info, card = dataset.info, dataset.info.get("card", {})
    sources = [{k: s.get(k) for k in ("input", "file", "format", "sha256", "rows")}
               for s in info.get("sources", [])]
    front = {
        "pretty_name": dataset.name,
        "license": card.get("license", "unknown"),
        "tags": ["tinylm"],
        "source_datasets": sorted({str(s["input"]) for s in sources}),
        "tinylm": {
            "version": version,
            "manifest_sha256": dataset.manifest_sha256,
            "rows": dataset.row_count(),
            "author": dataset.author,
            "claimed_source": card.get("claimed_source"),
            "audit": {"passed": audit.get("passed"), "manifest_sha256":
                      audit.get("manifest_sha256"), "written": audit.get("written"),
                      "thresholds": audit.get("thresholds", {}),
                      "figures": audit.get("figures", {})},
            "reviews": [{k: r.get(k) for k in ("reviewer", "signed", "note", "manifest_sha256",
                                                "audit_sha256")} for r in reviews],
            "provenance": {"sources": sources, "history": info.get("history", [])},
            **({"curriculum": info["curriculum"]} if "curriculum" in info else {}),
        },
    }
    lines = ["---", "# dataset card written by tinylm data publish"]
    lines += [f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in front.items()]
    lines += ["---", "", f"# {dataset.name}", ""]
    lines += [card.get("description") or "(no description given at ingest)", ""]
    lines += [f"- Rows: {dataset.row_count()}; manifest sha256 `{dataset.manifest_sha256}`",
              (f"- Claimed source: {card.get('claimed_source')}; licence: "
               f"{card.get('license', 'unknown')}"),
              f"- Author: {dataset.author}; reviewed by "
              + ", ".join(f"{r['reviewer']} ({r.get('signed')})" for r in reviews),
              "- Audit (passed): "
              + (", ".join(f"{k} {v}" for k, v in audit.get("figures", {}).items()
                           if isinstance(v, (int, float, str))) or "no figures given"),
              "- Made by: " + " -> ".join(str(h.get("step")) for h in info.get("history", [])),
              ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- hub

def publish_to_hub(dataset: Dataset, repo: str, version: str, card: str, dry_run: bool,
                   log) -> str:
    if not re.match(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$", repo):
        raise TinyLMError(f"--to hf://{repo}: expected hf://ORG/NAME")
    files = ["data/" + p.relative_to(dataset.path).as_posix() for n in COPIED
             for p in ([dataset.path / n] if (dataset.path / n).is_file()
                       else sorted((dataset.path / n).rglob("*"))) if p.is_file()]
    if dry_run:
        log(f"dry run: would upload {len(files)} file(s) + README.md to the hub dataset "
            f"{repo}, tagged {version}:")
        for name in files:
            log(f"  {name}")
        return f"hf://{repo}@{version}"
    _check_hub_reachable(repo)
    return _upload(dataset, repo, version, card, log)


def _check_hub_reachable(repo: str) -> None:
    import importlib.util
    import socket

    from tinylm.data.sources import HUB

    if importlib.util.find_spec("huggingface_hub") is None:
        raise TinyLMError("publishing to the hub needs huggingface_hub (pip install "
                          "'tinylm[hub]')")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise TinyLMError(f"hf://{repo}: $HF_HUB_OFFLINE is set; publish to a local registry "
                          f"folder instead")
    try:
        socket.create_connection(HUB, timeout=3).close()
    except OSError as err:
        raise TinyLMError(f"hf://{repo}: the Hugging Face hub ({HUB[0]}) is not reachable "
                          f"({err.strerror or err}); publish to a local registry folder or "
                          f"use --dry-run") from None


def _upload(dataset: Dataset, repo: str, version: str, card: str,
            log) -> str:  # pragma: no cover - needs the hub and a token
    import tempfile

    from huggingface_hub import HfApi

    api = HfApi()
    refs = api.list_repo_refs(repo, repo_type="dataset") if api.repo_exists(
        repo, repo_type="dataset") else None
    if refs is not None and any(t.name == version for t in refs.tags):
        raise TinyLMError(f"hf://{repo} already has a tag {version}; a published version is "
                          f"never replaced")
    with tempfile.TemporaryDirectory() as folder:
        staged = Path(folder) / "dataset"
        _copy_verified(dataset, staged, card)
        api.create_repo(repo, repo_type="dataset", exist_ok=True, private=True)
        api.upload_folder(folder_path=str(staged), repo_id=repo, repo_type="dataset",
                          commit_message=f"tinylm data publish {dataset.name} {version}")
        api.create_tag(repo, tag=version, repo_type="dataset")
    log(f"published {dataset.name} to hf://{repo} (tag {version})")
    return f"hf://{repo}@{version}"
