"""The data dir fills up mid-run: a clear error naming the cause, no corruption, and after
space is freed and the worker restarted, every entity equals the model."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.integration.conftest import Deployment
from tests.support.kafka import envelope
from tests.support.mixed_model import mixed_stream
from tests.support.worker import wait_for
from tests.system.conftest import (
    check_outputs,
    check_state,
    define_rework,
    read_raw,
    send_mixed,
    start_worker,
    wait_committed,
    wait_notices,
)

pytestmark = [pytest.mark.integration, pytest.mark.system]

DISK_MB = 96


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MB mounted for the test (needs root and a sandbox that allows mount)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"the sandbox forbids mount: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """A file taking all but ``leave_bytes`` of the disk's free space."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with filler.open("wb") as out:
        out.truncate(0)
        chunk = b"\0" * 2**20
        for _ in range(max(0, free - leave_bytes) // len(chunk)):
            out.write(chunk)
    return filler


@pytest.mark.timeout(500)
async def test_full_data_dir_is_named_in_the_log_and_nothing_is_corrupted(
    deployment: Deployment, small_disk: Path, figures: dict[str, Any]
) -> None:
    data_dir = small_disk / "w0"
    stream = mixed_stream(random.Random(77), 3000)
    # One user's messages of ~50 KB each: more than a RocksDB write buffer (8 MB) in one
    # table partition, so it must flush to the full disk.
    for n in range(240):
        message = {"conversation": "big", "role": "user", "content": f"{n} " + "z" * 50_000}
        event = envelope("conversation.message", "big-user", message)
        stream.events.append(("conversation.events", event))
        stream.model.apply(event)
    worker = start_worker(deployment, STATEKEEPER_DATA_DIR=str(data_dir))
    await define_rework(deployment.bootstrap, deployment)
    filler = fill(small_disk, leave_bytes=3 * 2**20)
    await send_mixed(deployment.bootstrap, deployment, stream)

    def disk_full_reported() -> bool:
        log = worker.log_path.read_text(errors="replace")
        return "No space left on device" in log or "ENOSPC" in log

    wait_for(disk_full_reported, timeout=180, interval=0.5)
    log = worker.log_path.read_text(errors="replace")
    assert "disk full" in log.lower() or "data dir" in log.lower(), "the log must say what to do"

    worker.kill()
    filler.unlink()
    worker = start_worker(deployment, "w0-again", STATEKEEPER_DATA_DIR=str(data_dir))
    await wait_committed(deployment.bootstrap, deployment)
    await wait_notices(deployment.bootstrap, deployment, stream.model)
    compared = check_state(worker.url, stream.model)
    outputs = await check_outputs(deployment.bootstrap, deployment, stream.model)
    letters = [msgpack.unpackb(raw) for _, raw in await read_raw(
        deployment.bootstrap, deployment.topic("deadletter"))]  # fmt: skip
    assert not [x for x in letters if x["reason"] == "internal_error"], "valid events dropped"
    figures.update(
        fault=f"data dir on a {DISK_MB} MB tmpfs filled mid-run, freed, restarted",
        events=len(stream.events), entities=compared, lost_or_corrupted=0, **outputs,
    )  # fmt: skip
