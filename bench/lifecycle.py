"""Resource expiry precision, and event processing while a wave of expiries is due.

One worker (8 partitions). N resources (default 20,000) are registered with TTLs chosen so
that their deadlines fall within one minute, while touches to 500 other resources flow at a
fixed offered rate. Reported: for every ``resource.expired`` notice, its send time (Kafka
timestamp) and the time a consumer saw it, each minus the deadline; and the touches applied
per second and the touch backlog (sent minus applied) before the wave and during it, from
the worker's ``/metrics``. Writes ``bench/results/lifecycle.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.common import (
    Deployment,
    bring_up,
    cpu_seconds,
    git_revision,
    packed_envelope,
    rss_mb,
    save,
)
from bench.sessions import collect_notices
from bench.workflow import percentiles

LEAD_S = 60  # first deadline this long after the registers are produced
SPREAD_S = 60  # deadlines spread over one minute
LIVE = 500  # resources that are only touched


async def produce_registers(producer: AIOKafkaProducer, topic: str, count: int) -> float:
    """Register ``count`` resources whose TTL deadlines fall within one minute."""
    begin = time.time()
    pending = []
    for n in range(count):
        ttl = LEAD_S + (n * SPREAD_S) / count
        value = packed_envelope("resource.register", f"x-{n}", {"kind": "wave", "ttl_s": ttl})
        pending.append(await producer.send(topic, key=f"acme/x-{n}".encode(), value=value))
    for delivery in pending:
        await delivery
    return time.time() - begin


async def steady_touches(
    producer: AIOKafkaProducer, topic: str, rate: int, sent: list[tuple[float, int]]
) -> None:
    """Touches to ``LIVE`` resources at ``rate`` per second; appends (time, total sent)."""
    for n in range(LIVE):
        value = packed_envelope("resource.register", f"live-{n}", {"kind": "live", "idle_s": 3600})
        await producer.send(topic, key=f"acme/live-{n}".encode(), value=value)
    total, start = 0, time.monotonic()
    while True:
        due = int((time.monotonic() - start) * rate)
        while total < due:
            key = f"live-{total % LIVE}"
            await producer.send(
                topic, key=f"acme/{key}".encode(), value=packed_envelope("resource.touch", key, {})
            )
            total += 1
        sent.append((time.time(), total))
        await asyncio.sleep(0.05)


def applied_touches(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith('statekeeper_events_applied_total{type="resource.touch"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


async def sample_applied(url: str, samples: list[tuple[float, int]]) -> None:
    """(time, touches applied) once a second."""
    while True:
        applied = await asyncio.to_thread(applied_touches, url)
        samples.append((time.time(), applied))
        await asyncio.sleep(1.0)


def window(
    applied: list[tuple[float, int]], sent: list[tuple[float, int]], start: float, end: float
) -> dict[str, Any]:
    """Touches applied per second and the backlog (sent - applied) within [start, end]."""
    inside = [(t, n) for t, n in applied if start <= t <= end]
    if len(inside) < 2:
        return {}
    rate = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
    backlog = []
    for t, n in inside:
        sent_by_then = max((s for ts, s in sent if ts <= t), default=0)
        backlog.append(sent_by_then - n)
    return {
        "seconds": round(inside[-1][0] - inside[0][0], 1),
        "touches_applied_per_s": round(rate, 1),
        "touch_backlog_mean": round(statistics.fmean(backlog), 1),
        "touch_backlog_max": max(backlog),
    }


async def run(count: int, rate: int) -> dict[str, Any]:
    bootstrap, redis_url = bring_up()
    dep = Deployment(bootstrap, redis_url, Path(tempfile.mkdtemp(prefix="sk-bench-lifecycle-")))
    try:
        worker = dep.start()
        assert worker.process is not None
        topic = dep.topic("lifecycle.events")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
        await producer.start()
        sent: list[tuple[float, int]] = []
        applied: list[tuple[float, int]] = []
        tasks = []
        try:
            produce_s = await produce_registers(producer, topic, count)
            tasks = [
                asyncio.create_task(steady_touches(producer, topic, rate, sent)),
                asyncio.create_task(sample_applied(worker.url, applied)),
            ]
            cpu_before = cpu_seconds(worker.process.pid)
            notices = await collect_notices(
                bootstrap, dep.topic("lifecycle.notices"), count, LEAD_S + SPREAD_S + 240
            )
            cpu = cpu_seconds(worker.process.pid) - cpu_before
        finally:
            for task in tasks:
                task.cancel()
            await producer.stop()
        return report(
            count, rate, produce_s, notices, applied, sent, cpu, rss_mb(worker.process.pid)
        )
    finally:
        dep.close()


def report(
    count: int,
    rate: int,
    produce_s: float,
    notices: list[tuple[int, float, dict[str, Any]]],
    applied: list[tuple[float, int]],
    sent: list[tuple[float, int]],
    cpu_s: float,
    rss: float,
) -> dict[str, Any]:
    expired = [(stamp, seen, n) for stamp, seen, n in notices if n["type"] == "resource.expired"]
    per_key = Counter(n["key"] for _, _, n in expired)
    sent_late = [stamp - n["deadline"] for stamp, _, n in expired]
    seen_late = [seen - n["deadline"] for _, seen, n in expired]
    first = min(stamp for stamp, _, _ in expired) / 1000 if expired else time.time()
    last = max(stamp for stamp, _, _ in expired) / 1000 if expired else time.time()
    return {
        "revision": git_revision(),
        "resources": count,
        "notices": len(expired),
        "resources_with_notice": len(per_key),
        "repeated_notices": sum(c - 1 for c in per_key.values()),
        "registers_produced_in_s": round(produce_s, 1),
        "check_interval_s": 0.5,
        "batch_per_partition_tick": 500,
        "notice_sent_minus_deadline_ms": percentiles(sent_late) if sent_late else None,
        "notice_seen_minus_deadline_ms": percentiles(seen_late) if seen_late else None,
        "early_notices": sum(1 for late in sent_late if late < 0),
        "wave_seconds": round(last - first, 1),
        "offered_touches_per_s": rate,
        "before_wave": window(applied, sent, first - 30, first - 1),
        "during_wave": window(applied, sent, first, last),
        "worker_cpu_s_during_run": round(cpu_s, 1),
        "worker_rss_mb": round(rss, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resources", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500, help="offered touches per second")
    args = parser.parse_args()
    result = asyncio.run(run(args.resources, args.rate))
    print(save("lifecycle", result))
    print(result)
