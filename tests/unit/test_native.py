"""The compiled workflow core (native/, ``statekeeper-native``) agrees with the Python path.

The Python path is the reference: on random input, every record gives the same staged rows,
counts, records, notes and metrics whichever path handled it (tests/support/native_check.py).
``make deps`` builds the core; without it these tests fail rather than skip, so a machine
that lost it shows up here.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import statekeeper_native  # built by `make deps` (native/)
from aiokafka.partitioner import murmur2

from statekeeper.agents.pipeline import murmur2_partition, python_partition

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT, env={**os.environ, "STATEKEEPER_VAR_DIR": str(tmp_path), **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_core_stages_what_the_python_path_stages(seed: int, tmp_path: Path) -> None:
    check = run(
        ["-m", "tests.support.native_check", "--events", "3000", "--seed", str(seed)], tmp_path
    )
    assert check.returncode == 0, check.stdout + check.stderr
    seen = json.loads(check.stdout.strip().splitlines()[-1])
    assert seen["events"] == 3000
    assert seen["compiled"] > 600  # the comparison covered the core, not only its fallbacks
    # What the core takes, it takes whenever the Python path would apply it. The one case it
    # leaves to Python is an envelope with a field besides the contract's (the Python path's
    # slow check accepts those): a few per run at the generator's rate.
    assert seen.get("applied by python: workflow.transition", 0) <= 3
    assert seen.get("applied by python: workflow.start", 0) <= 3


def test_the_core_agrees_on_stored_rows_we_never_write(tmp_path: Path) -> None:
    """Rows re-encoded by other tools, a repeated attribute, a bad version, undecodable
    recent ids, counts that are not ints: the core hands those back or writes what Python
    would write back."""
    check = run(
        ["-m", "tests.support.native_check", "--events", "3000", "--seed", "5",
         "--damaged", "0.02"],
        tmp_path, STATEKEEPER_LOG_LEVEL="critical",
    )  # fmt: skip
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    seen = json.loads(check.stdout.strip().splitlines()[-1])
    assert seen["events"] == 3000 and seen["compiled"] > 300


def test_a_record_staged_in_part_stops_instead_of_going_to_python(tmp_path: Path) -> None:
    check = run(["-m", "tests.support.native_check", "--partial"], tmp_path)
    assert check.stdout.strip() == "raised PartiallyStaged, items staged: True", check.stderr


def test_partitions_match_kafka_default_partitioner() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(rng.randrange(0, 40)) for _ in range(2000)] + [b"", b"a", b"acme/x"]
    for key in keys:
        for partitions in (1, 3, 8, 64):
            expected = (murmur2(key) & 0x7FFFFFFF) % partitions  # aiokafka's, as Kafka's
            assert statekeeper_native.partition_of(key, partitions) == expected
            assert python_partition(key, partitions) == expected
    assert murmur2_partition is statekeeper_native.partition_of  # the setting's default


def test_the_setting_turns_the_core_off(tmp_path: Path) -> None:
    probe = "from statekeeper.agents import workflow; print(workflow.core is None)"
    off = run(["-c", probe], tmp_path, STATEKEEPER_NATIVE="false", STATEKEEPER_LOG_LEVEL="error")
    on = run(["-c", probe], tmp_path, STATEKEEPER_NATIVE="true", STATEKEEPER_LOG_LEVEL="error")
    assert (off.stdout.strip(), on.stdout.strip()) == ("True", "False"), off.stderr + on.stderr
