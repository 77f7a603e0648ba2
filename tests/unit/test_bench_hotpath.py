"""bench/hotpath.py still drives the real batched runner, and checks what it measured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_in_process_benchmark_applies_every_event_it_times(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "STATEKEEPER_VAR_DIR": str(tmp_path),
        "STATEKEEPER_REDIS_URL": "redis://127.0.0.1:1/0",  # invalidation may fail: no matter
    }
    run = subprocess.run(
        [sys.executable, "-m", "bench.hotpath", "--items", "120", "--repeat", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("480 events") == 2  # checked after each run (see bench.hotpath)
    assert "hotpath: best" in run.stdout
