"""Shared fixtures: the real data dir, an isolated token cache, tiny trained runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinylm.data.sources import resolve_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return resolve_data_dir()


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Token caches of the whole session go to one temp folder (shared between tests, so each
    corpus is packed once, but never the user's ~/.cache)."""
    folder = tmp_path_factory.mktemp("tinylm-cache")
    old = os.environ.get("TINYLM_CACHE")
    os.environ["TINYLM_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("TINYLM_CACHE", None)
    else:
        os.environ["TINYLM_CACHE"] = old


def run_cli(*args: str, check: bool = True, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m tinylm ARGS` in a child process, as a user would."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "tinylm", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"tinylm {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory) -> Path:
    """A `debug`-preset run trained for 40 steps on TinyStories bytes, checkpoints every 20."""
    out = tmp_path_factory.mktemp("debug-run") / "run"
    run_cli("train", "--preset", "debug", "--data", "tinystories", "--steps", "40",
            "--ckpt-every", "20", "--eval-every", "20", "--out", str(out), "--no-progress")
    return out
