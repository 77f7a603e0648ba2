"""Recovery with many items: restart time with the data dir intact and rebuilt, and RSS.

One worker (8 partitions). ``--items`` workflow items are started (one ``workflow.start``
each) and applied; then the worker is stopped and started again three ways, timing from
process start until ``/readyz`` answers 200 *and* a point query for a random item answers
with it:

- **intact**: the same data dir (RocksDB holds everything; faust reads no changelog), three
  restarts in a row, each reported;
- **wiped**: an empty data dir, so every table is rebuilt from its changelog topics
  (figure: changelog keys per second of that restart);
- worker RSS after applying the items and after each restart.

Writes ``bench/results/recovery.json``. Run: ``.venv/bin/python -m bench.recovery``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from bench.common import (
    API_KEY,
    Deployment,
    RecordCounter,
    bring_up,
    git_revision,
    rss_mb,
    save,
)
from bench.workflow import FLOW, envelope, produce_all
from tests.support.worker import WorkerProcess, http_get

PARTITIONS = 8
INTACT_RESTARTS = 3  # one restart alone is at the mercy of whatever else the machine does


def starts(items: int) -> list[tuple[bytes, bytes]]:
    return [
        (
            f"acme/item-{n}".encode(),
            msgpack.packb(envelope("workflow.start", f"item-{n}", {"workflow": "flow"})),
        )
        for n in range(items)
    ]


async def wait_records(bootstrap: str, topic: str, count: int, what: str) -> float:
    """Poll until ``topic`` holds ``count`` records; seconds taken. Shows progress."""
    began = time.monotonic()
    seen = -1
    async with RecordCounter(bootstrap, topic, PARTITIONS) as counter:
        while (seen := await counter.count()) < count:
            print(f"\r  {what}: {seen:,}/{count:,}", end="", flush=True)
            await asyncio.sleep(1)
    print(f"\r  {what}: {seen:,}/{count:,}", flush=True)
    return time.monotonic() - began


def timed_start(dep: Deployment, items: int) -> tuple[WorkerProcess, float]:
    """Start a worker; seconds until it is ready and answers for a random item."""
    began = time.monotonic()
    env = {**dep.env(), "STATEKEEPER_DATA_DIR": str(dep.root / "w0")}
    worker = WorkerProcess(env=env, log_path=dep.root / "w0.log")
    dep.workers.append(worker)
    worker.start().wait_ready(timeout=1800)
    key = f"item-{random.randrange(items)}"
    while True:
        status, _, _ = http_get(f"{worker.url}/v1/workflows/{key}", API_KEY)
        if status == 200:
            return worker, time.monotonic() - began
        time.sleep(0.05)


async def main(items: int) -> None:
    bootstrap, redis_url = bring_up()
    root = Path(tempfile.mkdtemp(prefix="sk-bench-recovery-"))
    dep = Deployment(bootstrap, redis_url, root)
    try:
        worker = dep.start()
        define = envelope("workflow.define", "flow", FLOW)
        await produce_all(
            bootstrap, dep.topic("workflow.definitions"), [(b"acme/flow", msgpack.packb(define))]
        )
        print(f"bench: producing {items:,} workflow.start events…", flush=True)
        await produce_all(bootstrap, dep.topic("workflow.events"), starts(items))
        applied_s = await wait_records(bootstrap, dep.topic("workflow.status"), items, "applied")
        assert worker.process is not None
        rss_loaded = rss_mb(worker.process.pid)
        worker.stop()

        intact: list[float] = []
        for n in range(INTACT_RESTARTS):
            print(f"bench: restart {n + 1}/{INTACT_RESTARTS}, data dir intact…", flush=True)
            worker, seconds = timed_start(dep, items)
            intact.append(round(seconds, 2))
            assert worker.process is not None
            rss_intact = rss_mb(worker.process.pid)
            worker.stop()

        print("bench: restart, data dir wiped (rebuilt from the changelogs)…", flush=True)
        shutil.rmtree(root / "w0")
        worker, wiped_s = timed_start(dep, items)
        assert worker.process is not None
        rss_wiped = rss_mb(worker.process.pid)
        worker.stop()
    finally:
        dep.close()
    changelog_keys = 2 * items + 1  # an item row and a history row each, plus the counts
    result: dict[str, Any] = {
        "revision": git_revision(),
        "items": items,
        "apply": {"seconds": round(applied_s, 1), "items_per_s": round(items / applied_s)},
        "restart_intact_s": intact,
        "restart_wiped_s": round(wiped_s, 2),
        "rebuild_keys_per_s": round(changelog_keys / wiped_s),
        "worker_rss_mb": {
            "after_apply": rss_loaded,
            "after_intact_restart": rss_intact,
            "after_wiped_restart": rss_wiped,
        },
    }
    path = save("recovery", result)
    print(f"bench: {result}\nwrote {path}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().items))
