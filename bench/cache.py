"""The cache's hit path against the computation it fronts.

Run: ``make bench-cache`` (or ``.venv/bin/python -m bench.cache``). Writes
``bench/results/cache.json`` with, from one run on this machine:

- in process: ``get_or_compute`` on a hit (key hashing, one Redis ``MGET``, msgpack decode)
  and the bare ``MGET`` + decode under it, for a workflow-report-sized value;
- over HTTP, one worker holding a workflow history: the report when cached (``X-Cache: hit``)
  and when computed (each miss forced by invalidating the workflow's tag), and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from bench.common import API_KEY, Deployment, bring_up, git_revision, save
from bench.workflow import envelope, produce_all
from statekeeper.stores.cache import Cache, CacheConfig
from statekeeper.stores.cache_entries import Entry
from statekeeper.stores.reports import WorkflowShare, merge_workflow_report

FLOW = {
    "states": ["draft", "review", "sent", "paid", "void"],
    "initial": "draft",
    "terminal": ["paid", "void"],
    "transitions": [["draft", "review"], ["review", "sent"], ["sent", "paid"], ["draft", "void"]],
}
PATH = ["review", "sent", "paid"]


def ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(s * 1000 for s in seconds)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "n": len(ordered),
        "p50": pick(0.5),
        "p99": pick(0.99),
        "mean": round(statistics.fmean(ordered), 3),
    }


def sample_report(items: int) -> dict[str, Any]:
    """A report value of the real shape, computed from a synthetic history."""
    share = WorkflowShare("invoice")
    for n in range(items):
        ts = n * 1000
        share.add({"key": f"i{n}", "workflow": "invoice", "type": "workflow.start",
                   "to": "draft", "ts": ts})  # fmt: skip
        for step, state in enumerate(PATH[: n % 4], 1):
            share.add({"key": f"i{n}", "workflow": "invoice", "type": "workflow.transition",
                       "to": state, "ts": ts + step * 7000 + n % 13})  # fmt: skip
    return merge_workflow_report("invoice", FLOW["states"], [share.to_json()])


async def in_process(redis_url: str, calls: int) -> dict[str, Any]:
    """Hit latency of the cache API, and of the bare read under it."""
    cache = Cache(CacheConfig(redis_url=redis_url, namespace=f"bench-{uuid.uuid4().hex[:8]}"))
    value = sample_report(2000)

    async def compute() -> dict[str, Any]:
        return value

    params, tags = {"workflow": "invoice"}, ["workflow:invoice"]
    first = await cache.get_or_compute("report.workflow", "acme", params, compute, ttl_s=600,
                                       tags=tags)  # fmt: skip
    assert first.status == "miss"
    hits: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        result = await cache.get_or_compute("report.workflow", "acme", params, compute,
                                            ttl_s=600, tags=tags)  # fmt: skip
        hits.append(time.perf_counter() - started)
        assert result.status == "hit"
    keys = cache.keys.for_entry("acme", "report.workflow", params, tags)
    reads: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        raw, *_ = await cache.redis.mget([keys.entry, *keys.tag_tokens])
        Entry.decode(raw)
        reads.append(time.perf_counter() - started)
    await cache.close()
    return {
        "value_bytes": len(msgpack.packb(value)),
        "get_or_compute_hit_ms": ms(hits),
        "mget_and_decode_ms": ms(reads),
    }


async def load_history(dep: Deployment, items: int) -> int:
    define = envelope("workflow.define", "invoice", FLOW)
    await produce_all(dep.bootstrap, dep.topic("workflow.definitions"),
                      [(b"acme/invoice", msgpack.packb(define))])  # fmt: skip
    records = []
    for n in range(items):
        key = f"inv-{n}"
        events = [envelope("workflow.start", key, {"workflow": "invoice"})]
        events += [envelope("workflow.transition", key, {"to": s}) for s in PATH[: n % 4]]
        records += [(f"acme/{key}".encode(), msgpack.packb(e)) for e in events]
    await produce_all(dep.bootstrap, dep.topic("workflow.events"), records)
    return len(records)


async def status_consumed(dep: Deployment) -> bool:
    """The worker has read every status record, so no invalidation is still on its way."""
    topic = dep.topic("workflow.status")
    admin = AIOKafkaAdminClient(bootstrap_servers=dep.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=dep.bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"bench-{dep.run}")
        ours = {tp: meta.offset for tp, meta in committed.items() if tp.topic == topic}
        ends = await consumer.end_offsets(list(ours)) if ours else {}
    finally:
        await consumer.stop()
        await admin.close()
    return bool(ours) and all(ours[tp] >= ends[tp] for tp in ours)


async def get(session: aiohttp.ClientSession, url: str) -> tuple[float, str, Any]:
    started = time.perf_counter()
    async with session.get(url) as reply:
        body = await reply.json()
        assert reply.status == 200, body
        return time.perf_counter() - started, reply.headers["X-Cache"], body


async def over_http(dep: Deployment, items: int, hits: int, misses: int) -> dict[str, Any]:
    worker = dep.start()
    history = await load_history(dep, items)
    url = f"{worker.url}/v1/reports/workflow?workflow=invoice"
    cache = Cache(CacheConfig(redis_url=dep.redis_url, namespace=f"sk:bench-{dep.run}"))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:  # until the whole history is applied
            _, _, body = await get(session, url)
            await cache.invalidate("acme", ["workflow:invoice"])
            if body["result"]["items"] == items and body["result"]["states"]["paid"]["items"]:
                counted = sum(s["entries"] for s in body["result"]["states"].values())
                if counted == history:
                    break
            await asyncio.sleep(1)
        while not await status_consumed(dep):
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)  # the last debounced invalidation (0.25 s) has gone out
        computed: list[float] = []
        for _ in range(misses):
            await cache.invalidate("acme", ["workflow:invoice"])
            seconds, status, _ = await get(session, url)
            assert status == "miss", status
            computed.append(seconds)
        cached: list[float] = []
        for _ in range(hits):
            seconds, status, _ = await get(session, url)
            assert status == "hit", status
            cached.append(seconds)
    await cache.close()
    miss, hit = ms(computed), ms(cached)
    return {
        "history_records": history,
        "items": items,
        "report_computed_ms": miss,
        "report_cached_ms": hit,
        "computed_p50_over_cached_p50": round(miss["p50"] / hit["p50"], 1),
    }


async def main(items: int, calls: int, hits: int, misses: int) -> None:
    bootstrap, redis_url = bring_up()
    print("bench: in-process hits…", flush=True)
    local = await in_process(redis_url, calls)
    print(f"  {local}", flush=True)
    dep = Deployment(bootstrap, redis_url, Path(tempfile.mkdtemp(prefix="sk-bench-cache-")))
    try:
        print(f"bench: report over HTTP, {items} items…", flush=True)
        http = await over_http(dep, items, hits, misses)
        print(f"  {http}", flush=True)
    finally:
        dep.close()
    path = save("cache", {"revision": git_revision(), "in_process": local, "http": http})
    print(f"bench: wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--hits", type=int, default=2000)
    parser.add_argument("--misses", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.items, args.calls, args.hits, args.misses))
