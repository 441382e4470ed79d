"""Builders shared by the curation tests: small dataset folders made in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinylm.data.curate.dataset import DatasetWriter, make_row, write_check

STORY = ("Once upon a time there was a little {animal} who lived near a {place}. Every day "
         "the {animal} went to the {place} and looked for {thing}. ")


def story_rows(count: int, source: str = "stories") -> list[dict]:
    """Distinct rows of varied length and repetitiveness (so zlib difficulty varies)."""
    animals, places = ("cat", "dog", "fox", "owl", "bee"), ("river", "hill", "wood", "sea")
    rows = []
    for i in range(count):
        text = STORY.format(animal=animals[i % 5], place=places[i % 4], thing=f"thing {i}")
        text = text * (1 + i % 4) + " ".join(f"w{(i * 7 + k) % 97}" for k in range(i % 9))
        rows.append(make_row(text, source, "stories.txt", i + 1, {"score": i % 5 + 1}))
    return rows


def build_dataset(path: Path, rows: list[dict], author: str = "ana",
                  rows_per_part: int = 8, **info) -> Path:
    with DatasetWriter(path, name=path.name, author=author, rows_per_part=rows_per_part,
                       card={"claimed_source": "stories", "license": "cc-by-4.0"},
                       **info) as writer:
        for row in rows:
            writer.write(row)
    return path


@pytest.fixture()
def stories(tmp_path) -> Path:
    """A 40-row dataset in 5 parts, authored by ana."""
    return build_dataset(tmp_path / "stories", story_rows(40))


def passing_audit(dataset, **figures) -> None:
    write_check(dataset, "audit", {"passed": True, "thresholds": {"exact_dup_rate": 0.01},
                                   "figures": {"rows": 40, "exact_dup_rate": 0.0, **figures}})
