"""The path every input record takes: decode, validate, route, handle or dead-letter.

Bad input never escapes as an exception: it becomes a dead-letter record with a reason
(contract section 2), and the stream goes on with the next record.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka.partitioner import murmur2
from faust.exceptions import PartitionsMismatch

from statekeeper import codec
from statekeeper.app import StatekeeperApp
from statekeeper.compiled import compiled_module
from statekeeper.metrics import metrics
from statekeeper.stores.staged import emit
from statekeeper.topics.envelope import Envelope, decode_envelope
from statekeeper.topics.rejections import Reason, Rejected

logger = logging.getLogger(__name__)

REROUTED_HEADER = "statekeeper-rerouted"
EXIT_CANNOT_STORE = 75  # EX_TEMPFAIL: fix the cause, restart, the record is read again
METADATA_RETRIES = 20

Handler = Callable[[Envelope], Awaitable[bool]]
"""Applies one valid event; returns False for a redelivery that had no effect."""

FastPath = Callable[[Any, list[Any], int, int], int]
"""(batch, raw records, start, stop) -> the index of the first record of ``records[start:stop]``
it did not apply; that record is the pipeline's unless the batch is full (the batched
runner's records only; see :func:`statekeeper.agents.workflow.apply_compiled`)."""

topic_of_type: dict[str, str] = {}
"""Every event type some pipeline accepts -> its input topic (``POST /v1/events`` uses it)."""

processed_offsets: dict[tuple[str, int], int] = {}
"""(topic, partition) -> offset of the last record handled (applied or dead-lettered)."""


class InputEvent(Protocol):
    """A record to handle: a faust event, or a raw one on the batched path."""

    @property
    def message(self) -> Any: ...

    @property
    def value(self) -> Any: ...


@functools.lru_cache(maxsize=65_536)
def python_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (pure Python, so cached)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_native = compiled_module()
# The compiled one when the core is on: a cache miss of the Python one costs more than a
# whole compiled event.
murmur2_partition: Callable[[bytes, int], int] = (
    _native.partition_of if _native is not None else python_partition
)
"""``murmur2_partition(key, partitions)``: the partition Kafka's default partitioner picks."""


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
        fast: FastPath | None = None,
    ) -> None:
        self.app = app
        self.fast = fast
        self.topic = topic
        self.types = types
        self.handler = handler
        self.keyed = keyed
        self.max_bytes = app.settings.max_event_bytes
        self.partitions = app.settings.partitions
        topic_of_type.update(dict.fromkeys(types, topic))

    async def process(self, event: InputEvent) -> None:
        """Handle one record; never raises for bad input."""
        await self.handle_record(event)
        message = event.message
        processed_offsets[(message.topic, message.partition)] = message.offset

    async def handle_record(self, event: InputEvent) -> None:
        """Decode, validate, route, then apply or dead-letter one record."""
        envelope: Envelope | None = None
        try:
            envelope = decode_envelope(event.value, max_bytes=self.max_bytes, types=self.types)
            if self.keyed and not self._in_place(event, envelope):
                await self._reroute(event, envelope)
                return
            try:
                applied = await self.handler(envelope)
            except PartitionsMismatch as exc:
                applied = await self._handle_again(event, envelope, exc)
            if applied:
                metrics.applied[envelope.type] += 1
            else:
                metrics.duplicates[envelope.type] += 1
        except Rejected as rejection:
            if rejection.event is None and envelope is not None:
                rejection.event = envelope.as_dict()
            await self.dead_letter(event, rejection)
        except Exception as exc:  # a bug must not stop the stream or lose the record
            if is_storage_failure(exc):
                self._stop_cannot_store(event, exc)
            logger.exception("handler failed on %s", _where(event))
            await self.dead_letter(
                event, Rejected(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:500])
            )

    async def _handle_again(
        self, event: InputEvent, envelope: Envelope, exc: PartitionsMismatch
    ) -> bool:
        """Wait out a changelog topic whose metadata is not known yet, then run the handler.

        Right after a worker creates a changelog topic, a loaded broker may list it with no
        partitions for a while and faust refuses the write. That is not the input's fault, so
        the record is tried again (handlers are replay-safe: a partial first try is completed
        by the same record's replay path) instead of being dead-lettered.
        """
        for attempt in range(METADATA_RETRIES):  # the first try was the caller's
            logger.warning("%s: table metadata not ready (%s); retrying", _where(event), exc)
            await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
            if attempt == METADATA_RETRIES - 1:
                break  # the last try lets the error through
            try:
                return await self.handler(envelope)
            except PartitionsMismatch as again:
                exc = again
        return await self.handler(envelope)

    def _stop_cannot_store(self, event: InputEvent, exc: Exception) -> None:
        """Fail-stop when table state cannot be written (disk full, I/O error).

        Dead-lettering would drop every following valid event as ``internal_error`` while the
        disk stays full. Exiting without committing leaves the record to be processed again
        after a restart (at-least-once; the replay path completes any partial write).
        """
        logger.critical(
            "cannot write table state in the data dir %s while handling %s: %s. Disk full? "
            "Free space there and restart the worker: this record and the ones after it are "
            "processed again, nothing was dead-lettered. Exiting (code %d).",
            self.app.settings.worker_data_dir, _where(event), exc, EXIT_CANNOT_STORE,
        )  # fmt: skip
        logging.shutdown()
        os._exit(EXIT_CANNOT_STORE)

    def _in_place(self, event: InputEvent, envelope: Envelope) -> bool:
        """True when the record sits under its envelope's key and partition."""
        message = event.message
        wanted = envelope.record_key
        return message.key == wanted and message.partition == murmur2_partition(
            wanted, self.partitions
        )

    async def _reroute(self, event: InputEvent, envelope: Envelope) -> None:
        """Send a record under its envelope's key, once; dead-letter it if it comes back."""
        message = event.message
        wanted = envelope.record_key
        headers = dict(message.headers or [])
        if REROUTED_HEADER in headers:
            raise Rejected(
                Reason.MISROUTED,
                "re-sent record still arrived on the wrong partition",
                envelope.as_dict(),
            )
        await emit(self.topic, wanted, event.value, {REROUTED_HEADER: b"1"})
        metrics.rerouted += 1
        logger.info("re-sent %s under key %r", _where(event), wanted)

    async def dead_letter(self, event: InputEvent, rejection: Rejected) -> None:
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
        await emit(self.app.topic_names.deadletter, message.key, _pack_safely(record))


def _pack_safely(record: dict[str, Any]) -> bytes:
    try:
        return codec.pack(record)
    except Exception:  # e.g. a decoded value msgpack cannot re-encode: keep the rest
        record["event"] = repr(record["event"])[:10_000]
        return codec.pack(record)


def is_storage_failure(exc: BaseException) -> bool:
    """RocksDB (rocksdict) raises plain ``Exception("IO error: …")``; the OS raises OSError."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)
    return str(exc).startswith(("IO error", "Corruption"))


def _where(event: InputEvent) -> str:
    m = event.message
    return f"{m.topic}[{m.partition}]@{m.offset}"
