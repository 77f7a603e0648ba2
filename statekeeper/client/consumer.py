"""Reading the output topics: status changes, lifecycle notices, dead letters.

:class:`StreamReader` is an async iterator of :class:`Received` records, filtered on their
fields. With a ``group_id`` it is resumable: a record counts as handled once the caller asks
for the next one (or leaves ``async with`` without an error), and handled positions are
committed to the group — every ``commit_interval_s`` and on a clean exit. A restart in the
same group goes on after the last handled record; a crash may deliver the records handled
since the last commit again (at least once). Records that the filter skips count as handled.
Without a group nothing is committed and ``start`` decides where reading begins.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from statekeeper import codec
from statekeeper.settings import Settings
from statekeeper.topics.names import TopicNames

# Filter name -> the record field it compares (a status record's new state is ``to``).
_FIELDS = {
    "tenant": "tenant",
    "key": "key",
    "workflow": "workflow",
    "state": "to",
    "condition": "condition",
    "type": "type",
    "reason": "reason",
}


@dataclass(frozen=True, slots=True)
class Received:
    """One decoded record and where it was read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.value[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.value.get(name, default)


class StreamReader:
    """Async iterator over one output topic, filtered by field values.

    ``where`` maps filter names (``tenant``, ``key``, ``workflow``, ``state``, ``condition``,
    ``type``, ``reason``) to a value or a collection of accepted values; None means any.
    """

    def __init__(
        self,
        topic: str,
        *,
        bootstrap_servers: str = "127.0.0.1:9092",
        group_id: str | None = None,
        start: Literal["earliest", "latest"] = "earliest",
        commit_interval_s: float = 1.0,
        where: dict[str, Any] | None = None,
        **kafka_options: Any,
    ) -> None:
        self.topic = topic
        self.group_id = group_id
        self.start_at = start
        self.commit_interval_s = commit_interval_s
        self.where = {k: _accepted(v) for k, v in (where or {}).items() if v is not None}
        unknown = set(self.where) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown filters {sorted(unknown)}; use {sorted(_FIELDS)}")
        self._kafka = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            auto_offset_reset=start,
            enable_auto_commit=False,
            **kafka_options,
        )
        self._buffer: Iterator[ConsumerRecord[bytes, bytes]] = iter(())
        self._handled: dict[TopicPartition, int] = {}  # next offset to read, per partition
        self._pending: ConsumerRecord[bytes, bytes] | None = None  # yielded, not yet handled
        self._committed_at = time.monotonic()

    async def start(self) -> StreamReader:
        """Join the group (or, without one, take every partition at ``start``)."""
        await self._kafka.start()
        if self.group_id is not None:
            self._kafka.subscribe([self.topic])
            return self
        # The consumer's own metadata covers only subscribed topics: ask the cluster.
        cluster = await self._kafka._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(self.topic)
        if not partitions:
            await self._kafka.stop()
            raise ValueError(f"topic {self.topic!r} does not exist (has a worker started?)")
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._kafka.assign(assigned)
        if self.start_at == "latest":
            await self._kafka.seek_to_end(*assigned)
        else:
            await self._kafka.seek_to_beginning(*assigned)
        for tp in assigned:  # resolve now, so "latest" means "from this call on"
            await self._kafka.position(tp)
        return self

    async def stop(self, *, commit: bool = True) -> None:
        """Commit what was handled (the last record yielded counts) and leave the group."""
        if commit:
            self._mark_handled()
            await self.commit()
        await self._kafka.stop()

    async def __aenter__(self) -> StreamReader:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop(commit=kind is None)

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> Received:
        self._mark_handled()
        while True:
            for record in self._buffer:
                received = _decoded(record)
                if received is not None and self._matches(received.value):
                    self._pending = record
                    return received
                self._handled[_tp(record)] = record.offset + 1
            await self._maybe_commit()
            batch = await self._kafka.getmany(timeout_ms=500)
            self._buffer = iter([r for records in batch.values() for r in records])

    async def read_until_end(self, timeout_s: float = 30.0) -> list[Received]:
        """Every matching record up to the topic's end as of this call (no group needed)."""
        ends = await self._kafka.end_offsets(list(self._kafka.assignment()))
        found: list[Received] = []
        deadline = time.monotonic() + timeout_s
        while await self._behind(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic}: not read to its end within {timeout_s}s")
            batch = await self._kafka.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.offset >= ends[_tp(record)]:
                        continue
                    received = _decoded(record)
                    if received is not None and self._matches(received.value):
                        found.append(received)
        return found

    async def _behind(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self._kafka.position(tp) < end:
                return True
        return False

    async def commit(self) -> None:
        """Commit the handled positions of the group now (no-op without a group)."""
        self._committed_at = time.monotonic()
        if self.group_id is None or not self._handled:
            return
        assigned = self._kafka.assignment()
        offsets = {
            tp: OffsetAndMetadata(offset, "")
            for tp, offset in self._handled.items()
            if tp in assigned
        }
        if offsets:
            await self._kafka.commit(offsets)
        self._handled.clear()

    async def _maybe_commit(self) -> None:
        if time.monotonic() - self._committed_at >= self.commit_interval_s:
            await self.commit()

    def _mark_handled(self) -> None:
        if self._pending is not None:
            self._handled[_tp(self._pending)] = self._pending.offset + 1
            self._pending = None

    def _matches(self, value: dict[str, Any]) -> bool:
        return all(value.get(_FIELDS[name]) in accepted for name, accepted in self.where.items())


def status_changes(
    settings: Settings | None = None,
    *,
    bootstrap_servers: str | None = None,
    topic_prefix: str | None = None,
    group_id: str | None = None,
    start: Literal["earliest", "latest"] = "earliest",
    tenant: str | None = None,
    workflow: str | list[str] | None = None,
    state: str | list[str] | None = None,
    key: str | None = None,
    **kafka_options: Any,
) -> StreamReader:
    """Status changes (``statekeeper.workflow.status``), filtered by tenant/workflow/state/key."""
    where = {"tenant": tenant, "workflow": workflow, "state": state, "key": key}
    return _reader(
        "workflow_status",
        settings,
        bootstrap_servers,
        topic_prefix,
        group_id,
        start,
        where,
        kafka_options,
    )


def lifecycle_notices(
    settings: Settings | None = None,
    *,
    bootstrap_servers: str | None = None,
    topic_prefix: str | None = None,
    group_id: str | None = None,
    start: Literal["earliest", "latest"] = "earliest",
    tenant: str | None = None,
    type: str | list[str] | None = None,
    key: str | None = None,
    **kafka_options: Any,
) -> StreamReader:
    """Lifecycle notices (closed, expired, released, purged, forgotten), filtered."""
    where = {"tenant": tenant, "type": type, "key": key}
    return _reader(
        "lifecycle_notices",
        settings,
        bootstrap_servers,
        topic_prefix,
        group_id,
        start,
        where,
        kafka_options,
    )


def dead_letters(
    settings: Settings | None = None,
    *,
    bootstrap_servers: str | None = None,
    topic_prefix: str | None = None,
    group_id: str | None = None,
    start: Literal["earliest", "latest"] = "earliest",
    reason: str | list[str] | None = None,
    **kafka_options: Any,
) -> StreamReader:
    """Dead-letter records ``{v, reason, detail, topic, partition, offset, event, ts}``."""
    where = {"reason": reason}
    return _reader(
        "deadletter",
        settings,
        bootstrap_servers,
        topic_prefix,
        group_id,
        start,
        where,
        kafka_options,
    )


def _reader(
    topic_attr: str,
    settings: Settings | None,
    bootstrap_servers: str | None,
    topic_prefix: str | None,
    group_id: str | None,
    start: Literal["earliest", "latest"],
    where: dict[str, Any],
    kafka_options: dict[str, Any],
) -> StreamReader:
    """Servers and security from ``settings`` (like the workers) unless given explicitly."""
    options: dict[str, Any] = {}
    if settings is not None:
        from statekeeper.connections import kafka_options as settings_options

        options = settings_options(settings)
        topic_prefix = settings.topic_prefix if topic_prefix is None else topic_prefix
    if bootstrap_servers is not None:
        options["bootstrap_servers"] = bootstrap_servers
    options.update(kafka_options)
    topic = getattr(TopicNames(topic_prefix or ""), topic_attr)
    return StreamReader(topic, group_id=group_id, start=start, where=where, **options)


def _accepted(value: Any) -> frozenset[Any]:
    if isinstance(value, str | int) or value is None:
        return frozenset([value])
    return frozenset(value)


def _tp(record: ConsumerRecord[bytes, bytes]) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


def _decoded(record: ConsumerRecord[bytes, bytes]) -> Received | None:
    try:
        value = codec.unpack(record.value or b"")
    except codec.DecodeError:
        return None
    if not isinstance(value, dict):
        return None
    return Received(record.topic, record.partition, record.offset, record.key, value)
