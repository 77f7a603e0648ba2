"""Session expiry precision: how late ``session.closed`` notices come after their deadlines.

One worker (8 partitions). N sessions are started with idle timeouts chosen so that their
deadlines fall within one minute, while a steady stream of updates to other sessions flows.
For every notice: the worker's send time (the notice's Kafka timestamp) and the time a
consumer saw it, each minus the deadline (``closed_at``). Writes
``bench/results/sessions.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import (
    Deployment,
    bring_up,
    cpu_seconds,
    git_revision,
    packed_envelope,
    rss_mb,
    save,
)
from bench.workflow import percentiles

LEAD_S = 100  # first deadline this long after the starts are produced
SPREAD_S = 60  # deadlines spread over one minute


async def produce_starts(producer: AIOKafkaProducer, topic: str, sessions: int) -> float:
    """Start ``sessions`` sessions whose idle deadlines fall within one minute."""
    begin = time.time()
    pending = []
    for n in range(sessions):
        # whole seconds: deadlines spread over SPREAD_S, plus the record time's own spread
        idle = LEAD_S + (n * SPREAD_S) // sessions
        value = packed_envelope("session.start", f"x-{n}", {"user": "u", "idle_timeout_s": idle})
        pending.append(await producer.send(topic, key=f"acme/x-{n}".encode(), value=value))
    for delivery in pending:
        await delivery
    return time.time() - begin


async def steady_updates(
    producer: AIOKafkaProducer, topic: str, rate: int, stop: asyncio.Event
) -> int:
    """Updates to 500 long-lived sessions at ``rate`` per second until ``stop``."""
    for n in range(500):
        value = packed_envelope("session.start", f"live-{n}", {"user": "u"})
        await producer.send(topic, key=f"acme/live-{n}".encode(), value=value)
    sent, start = 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            key = f"live-{sent % 500}"
            value = packed_envelope("session.update", key, {"step": sent % 7, "data": {"n": sent}})
            await producer.send(topic, key=f"acme/{key}".encode(), value=value)
            sent += 1
        await asyncio.sleep(0.02)
    return sent


async def collect_notices(
    bootstrap: str, topic: str, want: int, timeout: float
) -> list[tuple[int, float, dict[str, Any]]]:
    """(notice timestamp ms, seen at ms, notice) until ``want`` arrived or time ran out."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[tuple[int, float, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            seen = time.time() * 1000
            for records in batch.values():
                found += [(r.timestamp, seen, msgpack.unpackb(r.value)) for r in records]
    finally:
        await consumer.stop()
    return found


async def run(sessions: int, rate: int) -> dict[str, Any]:
    bootstrap, redis_url = bring_up()
    dep = Deployment(bootstrap, redis_url, Path(tempfile.mkdtemp(prefix="sk-bench-sessions-")))
    try:
        worker = dep.start()
        assert worker.process is not None
        topic = dep.topic("session.events")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
        await producer.start()
        stop = asyncio.Event()
        try:
            produce_s = await produce_starts(producer, topic, sessions)
            updates = asyncio.create_task(steady_updates(producer, topic, rate, stop))
            cpu_before = cpu_seconds(worker.process.pid)
            notices = await collect_notices(
                bootstrap, dep.topic("lifecycle.notices"), sessions, LEAD_S + SPREAD_S + 240
            )
            cpu = cpu_seconds(worker.process.pid) - cpu_before
            stop.set()
            updates_sent = await updates
        finally:
            await producer.stop()
        return report(
            sessions, rate, produce_s, updates_sent, notices, cpu, rss_mb(worker.process.pid)
        )
    finally:
        dep.close()


def report(
    sessions: int,
    rate: int,
    produce_s: float,
    updates_sent: int,
    notices: list[tuple[int, float, dict[str, Any]]],
    cpu_s: float,
    rss: float,
) -> dict[str, Any]:
    expired = [(stamp, seen, n) for stamp, seen, n in notices if n["key"].startswith("x-")]
    per_key = Counter(n["key"] for _, _, n in expired)
    sent_late = [stamp - n["closed_at"] for stamp, _, n in expired]
    seen_late = [seen - n["closed_at"] for _, seen, n in expired]
    deadlines = [n["closed_at"] for _, _, n in expired]
    return {
        "revision": git_revision(),
        "sessions": sessions,
        "notices": len(expired),
        "sessions_with_notice": len(per_key),
        "repeated_notices": sum(c - 1 for c in per_key.values()),
        "reasons": dict(Counter(n["reason"] for _, _, n in expired)),
        "deadline_window_s": (max(deadlines) - min(deadlines)) / 1000 if deadlines else None,
        "starts_produced_in_s": round(produce_s, 1),
        "background_updates_per_s": rate,
        "background_updates_sent": updates_sent,
        "check_interval_s": 0.5,
        "notice_sent_minus_deadline_ms": percentiles(sent_late) if sent_late else None,
        "notice_seen_minus_deadline_ms": percentiles(seen_late) if seen_late else None,
        "early_notices": sum(1 for late in sent_late if late < 0),
        "worker_cpu_s_during_expiry": round(cpu_s, 1),
        "worker_rss_mb": round(rss, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=200, help="background updates per second")
    parser.add_argument("--name", default="sessions", help="results file name")
    args = parser.parse_args()
    result = asyncio.run(run(args.sessions, args.rate))
    print(save(args.name, result))
    print(result)
