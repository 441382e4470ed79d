"""Schedules, and a real short run whose validation loss falls."""

import json
import math

import pytest

from tinylm.train.schedule import lr_at


def test_cosine_and_wsd_shapes():
    kw = dict(peak=1.0, total=100, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(9, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_at(100, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(55, schedule="cosine", **kw) == pytest.approx(0.55)
    assert lr_at(50, schedule="wsd", decay_frac=0.2, **kw) == 1.0
    assert lr_at(79, schedule="wsd", decay_frac=0.2, **kw) == 1.0
    assert lr_at(90, schedule="wsd", decay_frac=0.2, **kw) == pytest.approx(0.55)
    assert lr_at(100, schedule="wsd", decay_frac=0.2, **kw) == pytest.approx(0.1)


def test_debug_run_learns(debug_run):
    records = [json.loads(l) for l in (debug_run / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(val) == 2
    assert val[-1] < math.log(257) - 1.0  # well below uniform over 257 byte ids
    run = json.loads((debug_run / "run.json").read_text())
    assert run["spec"]["family"] == "llama" and run["train"]["steps"] == 40
