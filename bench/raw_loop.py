"""The raw aiokafka consume-and-produce loop as a process of its own: the latency floor.

``python -m bench.raw_loop BOOTSTRAP SOURCE SINK`` reads SOURCE from its end and, for each
fetch, writes one status record per event to SINK (same partition, the event's ``ts`` as
``event_ts``), one closed produce batch per partition, with the producer settings the worker
uses (``acks=all``, idempotent), awaits the acknowledgements and commits, until killed.
``bench.workflow`` offers it the same open-loop load as the worker: what the Python client
alone costs in latency on this machine, with no state, changelog or queries.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

import msgpack
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def run(bootstrap: str, source: str, sink: str) -> None:
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=f"raw-loop-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=100,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    print("raw loop: ready", flush=True)
    while True:
        fetched = await consumer.getmany(timeout_ms=100, max_records=2_000)
        sends = []
        for tp, messages in fetched.items():
            out = producer.create_batch()
            for message in messages:
                event = msgpack.unpackb(message.value)
                status = {"key": event["key"], "to": event["type"], "event_ts": event["ts"]}
                if out.append(key=message.key, value=msgpack.packb(status), timestamp=None) is None:
                    out.close()
                    sends.append(await producer.send_batch(out, sink, partition=tp.partition))
                    out = producer.create_batch()
                    out.append(key=message.key, value=msgpack.packb(status), timestamp=None)
            out.close()
            sends.append(await producer.send_batch(out, sink, partition=tp.partition))
        if sends:
            await asyncio.gather(*sends)
            await consumer.commit()


if __name__ == "__main__":
    asyncio.run(run(*sys.argv[1:4]))
