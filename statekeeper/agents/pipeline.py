"""The path every input record takes: decode, validate, route, handle or dead-letter.

Bad input never escapes as an exception: it becomes a dead-letter record with a reason
(contract section 2), and the stream goes on with the next record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from faust.types import EventT

from statekeeper import codec
from statekeeper.app import StatekeeperApp
from statekeeper.metrics import metrics
from statekeeper.topics.envelope import Envelope, decode_envelope
from statekeeper.topics.rejections import Reason, Rejected

logger = logging.getLogger(__name__)

REROUTED_HEADER = "statekeeper-rerouted"

Handler = Callable[[Envelope], Awaitable[bool]]
"""Applies one valid event; returns False for a redelivery that had no effect."""

topic_of_type: dict[str, str] = {}
"""Every event type some pipeline accepts -> its input topic (``POST /v1/events`` uses it)."""

processed_offsets: dict[tuple[str, int], int] = {}
"""(topic, partition) -> offset of the last record handled (applied or dead-lettered)."""


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key``."""
    return DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))


class EventPipeline:
    """Runs the common steps for one input topic and hands valid events to ``handler``.

    ``keyed`` topics hold per-entity state co-partitioned with the topic: a record whose
    key or partition does not match its envelope is re-sent under the right key once
    (so no state lands on the wrong partition) and dead-lettered if it comes back wrong.
    """

    def __init__(
        self,
        app: StatekeeperApp,
        topic: str,
        types: frozenset[str],
        handler: Handler,
        *,
        keyed: bool = True,
    ) -> None:
        self.app = app
        self.topic = topic
        self.types = types
        self.handler = handler
        self.keyed = keyed
        self.max_bytes = app.settings.max_event_bytes
        topic_of_type.update(dict.fromkeys(types, topic))

    async def process(self, event: EventT) -> None:
        """Handle one record; never raises for bad input."""
        await self._process(event)
        message = event.message
        processed_offsets[(message.topic, message.partition)] = message.offset

    async def _process(self, event: EventT) -> None:
        envelope: Envelope | None = None
        try:
            envelope = decode_envelope(event.value, max_bytes=self.max_bytes, types=self.types)
            if self.keyed and not await self._in_place(event, envelope):
                return
            if await self.handler(envelope):
                metrics.applied[envelope.type] += 1
            else:
                metrics.duplicates[envelope.type] += 1
        except Rejected as rejection:
            if rejection.event is None and envelope is not None:
                rejection.event = envelope.as_dict()
            await self.dead_letter(event, rejection)
        except Exception as exc:  # a bug must not stop the stream or lose the record
            logger.exception("handler failed on %s", _where(event))
            await self.dead_letter(
                event, Rejected(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:500])
            )

    async def _in_place(self, event: EventT, envelope: Envelope) -> bool:
        """True when the record sits under its envelope's key and partition."""
        message = event.message
        wanted = envelope.record_key
        partitions = self.app.settings.partitions
        if message.key == wanted and message.partition == murmur2_partition(wanted, partitions):
            return True
        headers = dict(message.headers or [])
        if REROUTED_HEADER in headers:
            raise Rejected(
                Reason.MISROUTED,
                "re-sent record still arrived on the wrong partition",
                envelope.as_dict(),
            )
        await self.app.topic(self.topic).send(
            key=wanted, value=event.value, headers={REROUTED_HEADER: b"1"}
        )
        metrics.rerouted += 1
        logger.info("re-sent %s under key %r", _where(event), wanted)
        return False

    async def dead_letter(self, event: EventT, rejection: Rejected) -> None:
        """Send the record to the dead-letter topic with its reason (contract section 2)."""
        message = event.message
        original = rejection.event if rejection.event is not None else event.value
        record: dict[str, Any] = {
            "v": 1,
            "reason": str(rejection.reason),
            "detail": rejection.detail,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "event": original,
            "ts": int(time.time() * 1000),
        }
        metrics.deadlettered[str(rejection.reason)] += 1
        logger.info("dead-lettered %s: %s", _where(event), rejection)
        await self.app.topic(self.app.topic_names.deadletter).send(
            key=message.key, value=_pack_safely(record)
        )


def _pack_safely(record: dict[str, Any]) -> bytes:
    try:
        return codec.pack(record)
    except Exception:  # e.g. a decoded value msgpack cannot re-encode: keep the rest
        record["event"] = repr(record["event"])[:10_000]
        return codec.pack(record)


def _where(event: EventT) -> str:
    m = event.message
    return f"{m.topic}[{m.partition}]@{m.offset}"
