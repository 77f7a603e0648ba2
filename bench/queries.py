"""Point queries over HTTP: throughput, latency under event load, cost of forwarding.

Run: ``.venv/bin/python -m bench.queries``. Writes ``bench/results/queries.json``. Two workers
share the partitions of a deployment holding ``--items`` workflow items; the load generator
is Python (aiohttp) on the same 2-core machine, so it competes with the worker for CPU:

- closed loop: ``--concurrency`` clients ask one worker for items it owns, as fast as
  they can, for ``--seconds``: requests/s and latency;
- forwarding: one client, one request at a time, to the same worker, for items it owns and
  for items the other worker owns (forwarded once): the p50 difference is the hop's cost;
- open loop under load: 1,000 requests/s due at fixed times (latency counts from the due
  time) while events are offered at ``--event-rate`` per second.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
from aiokafka import AIOKafkaProducer

from bench.common import API_KEY, Deployment, bring_up, git_revision, save
from bench.workflow import FLOW, envelope, percentiles, produce_all

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


async def seed(dep: Deployment, items: int) -> list[str]:
    await produce_all(
        dep.bootstrap,
        dep.topic("workflow.definitions"),
        [(b"acme/flow", msgpack.packb(envelope("workflow.define", "flow", FLOW)))],
    )
    await asyncio.sleep(1)
    keys = [f"item-{n}" for n in range(items)]
    starts = [
        (f"acme/{k}".encode(), msgpack.packb(envelope("workflow.start", k, {"workflow": "flow"})))
        for k in keys
    ]
    await produce_all(dep.bootstrap, dep.topic("workflow.events"), starts)
    return keys


async def owners(url: str, keys: list[str]) -> dict[str, str]:
    """Key -> URL of the worker that answered, once every item is visible."""
    found: dict[str, str] = {}
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        deadline = time.monotonic() + 600
        while len(found) < len(keys):
            for key in keys:
                if key in found:
                    continue
                async with http.get(f"{url}/v1/workflows/{key}") as reply:
                    if reply.status == 200:
                        found[key] = reply.headers["X-Statekeeper-Owner"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {len(keys)} items visible")
            await asyncio.sleep(0.5)
    return found


async def closed_loop(url: str, keys: list[str], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < stop:
            began = time.perf_counter()
            async with http.get(f"{url}/v1/workflows/{random.choice(keys)}") as reply:
                await reply.read()
                errors += reply.status != 200
            latencies.append((time.perf_counter() - began) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=HEADERS, connector=connector) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / seconds),
        "errors": errors,
        "latency_ms": percentiles(latencies),
    }


async def sequential(url: str, keys: list[str], count: int) -> dict[str, Any]:
    latencies = []
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        for n in range(count):
            began = time.perf_counter()
            async with http.get(f"{url}/v1/workflows/{keys[n % len(keys)]}") as reply:
                await reply.read()
                assert reply.status == 200
            latencies.append((time.perf_counter() - began) * 1000)
    return {"requests": count, "latency_ms": percentiles(latencies)}


async def open_loop_under_load(
    dep: Deployment, url: str, keys: list[str], rate: int, event_rate: int, seconds: float
) -> dict[str, Any]:
    latencies: list[float] = []
    producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, linger_ms=5)
    await producer.start()

    async def events() -> int:
        sent, begin = 0, time.monotonic()
        while (elapsed := time.monotonic() - begin) < seconds:
            while sent < int(elapsed * event_rate):
                key = keys[sent % len(keys)]
                target = "sent" if (sent // len(keys)) % 2 == 0 else "draft"
                event = envelope("workflow.transition", key, {"to": target})
                await producer.send(
                    dep.topic("workflow.events"), key=f"acme/{key}".encode(),
                    value=msgpack.packb(event),
                )  # fmt: skip
                sent += 1
            await asyncio.sleep(0.002)
        return sent

    async def one(http: aiohttp.ClientSession, due: float, key: str) -> None:
        async with http.get(f"{url}/v1/workflows/{key}") as reply:
            await reply.read()
        latencies.append((time.monotonic() - due) * 1000)

    async def queries() -> None:
        tasks = []
        begin = time.monotonic()
        async with aiohttp.ClientSession(headers=HEADERS) as http:
            for n in range(int(rate * seconds)):
                due = begin + n / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                tasks.append(asyncio.create_task(one(http, due, random.choice(keys))))
            await asyncio.gather(*tasks)

    sent, _ = await asyncio.gather(events(), queries())
    await producer.stop()
    return {
        "query_rate": rate,
        "event_rate_offered": event_rate,
        "events_sent": sent,
        "latency_ms": percentiles(latencies),
    }


async def main(args: argparse.Namespace) -> None:
    bootstrap, redis_url = bring_up()
    dep = Deployment(bootstrap, redis_url, Path(tempfile.mkdtemp(prefix="sk-bench-http-")))
    try:
        first = dep.start("w0")
        dep.start("w1")
        print(f"bench: {args.items} items over two workers…", flush=True)
        keys = await seed(dep, args.items)
        owner = await owners(first.url, keys)
        local = [k for k, url in owner.items() if url == first.url]
        remote = [k for k, url in owner.items() if url != first.url]
        print("bench: closed loop on one worker…", flush=True)
        throughput = await closed_loop(first.url, local, args.concurrency, args.seconds)
        print(f"  {throughput['requests_per_s']} req/s {throughput['latency_ms']}", flush=True)
        own = await sequential(first.url, local, args.sequential)
        hop = await sequential(first.url, remote, args.sequential)
        added = round(hop["latency_ms"]["p50"] - own["latency_ms"]["p50"], 2)
        print(f"  forwarding adds {added} ms at p50", flush=True)
        print(f"bench: 1,000 req/s open loop, {args.event_rate} events/s offered…", flush=True)
        loaded = await open_loop_under_load(
            dep, first.url, local, 1000, args.event_rate, args.seconds
        )
        print(f"  {loaded['latency_ms']}", flush=True)
    finally:
        dep.close()
    result = {
        "revision": git_revision(),
        "run": uuid.uuid4().hex[:8],
        "items": args.items,
        "closed_loop": throughput,
        "owner_answers": own,
        "forwarded_answers": hop,
        "forwarding_adds_p50_ms": added,
        "under_event_load": loaded,
    }
    print(f"bench: wrote {save('queries', result)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--event-rate", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
