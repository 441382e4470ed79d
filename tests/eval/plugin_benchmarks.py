"""Test-only benchmarks, registered on import: one quick, one that hangs, one that crashes.

The isolating harness re-imports this file in its child processes (a benchmark registered from
outside tinylm is found through its `source_file`), as it would a user's own benchmark.
"""

import os
import time

from tinylm.eval.tasks import Benchmark, register


def _no_files(data_dir):
    return []


def run_quick(scorer, settings, limit, data_dir):
    return {"acc": 1.0, "context": scorer.context_len}


def run_sleepy(scorer, settings, limit, data_dir):
    time.sleep(3600)
    return {"acc": 0.0}


def run_crashy(scorer, settings, limit, data_dir):
    os._exit(7)  # dies the hard way: no exception, no message to the parent


for _name, _run in (("test_quick", run_quick), ("test_sleepy", run_sleepy),
                    ("test_crashy", run_crashy)):
    register(Benchmark(name=_name, version="1", description="test only", settings=(),
                       files=_no_files, run=_run))
