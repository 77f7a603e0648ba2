"""Producing envelopes and reading output topics with plain aiokafka, as a user would."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from typing import Any

import msgpack
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient


def envelope(
    event_type: str, key: str, data: dict[str, Any], *, tenant: str = "acme", **extra: Any
) -> dict[str, Any]:
    """A valid envelope; ``extra`` overrides any field."""
    body = {
        "v": 1,
        "id": uuid.uuid4().hex,
        "type": event_type,
        "tenant": tenant,
        "key": key,
        "ts": int(time.time() * 1000),
        "data": data,
    }
    body.update(extra)
    return body


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


async def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> None:
    """Send (key, value) pairs in order and wait until every one is acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 2**20)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


async def send_envelopes(bootstrap: str, topic: str, envelopes: list[dict[str, Any]]) -> None:
    """Send envelopes under their contract keys ``{tenant}/{key}``, in order, batched.

    One producer keeps per-partition order, so per-item order holds without waiting for
    each acknowledgement; all are acknowledged before this returns.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        pending = [
            await producer.send(topic, key=f"{e['tenant']}/{e['key']}".encode(), value=pack(e))
            for e in envelopes
        ]
        for delivery in pending:
            await delivery
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, *, until: int, timeout: float = 30.0
) -> list[tuple[bytes | None, dict[str, Any]]]:
    """Read ``topic`` from the start until ``until`` records arrived (or time runs out)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[tuple[bytes | None, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < until and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found += [(r.key, msgpack.unpackb(r.value)) for r in records]
    finally:
        await consumer.stop()
    return found


def delete_topics_starting_with(bootstrap: str, *prefixes: str) -> int:
    """Delete every topic whose name starts with one of ``prefixes``; returns how many.

    Each test deployment creates ~100 partitions (inputs, outputs, ticks, changelogs); left
    behind, a few hundred tests' worth make a single-node broker's controller crawl. Runs in
    its own thread and loop, so it works from sync fixture teardown whatever loop is around.
    """

    async def delete() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
        await admin.start()
        try:
            doomed = [t for t in await admin.list_topics() if t.startswith(prefixes)]
            if doomed:
                await admin.delete_topics(doomed)
            return len(doomed)
        finally:
            await admin.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, delete()).result(timeout=60)
