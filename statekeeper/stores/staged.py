"""Staged writes: what one input batch changes, kept in memory until Kafka has all of it.

The batched workflow path (:mod:`statekeeper.agents.batched`) does not write faust tables
record by record. Handlers read and write :class:`StagedTable` views; the writes of one
partition's batch collect in a :class:`Staging` (the last value per key wins, so a key
written by many events costs one changelog record), and so do the records the batch sends
(status changes, notices, dead letters). The batch runner then produces everything, waits
for every acknowledgement, commits the input offset and only then writes RocksDB, one
write batch per table partition, with faust's persisted changelog offset inside it.

Reads see the batch's own writes first, then the partition's RocksDB. Scans
(:mod:`statekeeper.stores.scan`) read RocksDB only: the runner handles clock work (due
deadlines, purges) at the start of a batch, before any event of it is staged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from faust.types import TableT

from statekeeper.app import app
from statekeeper.exceptions import StatekeeperError

Output = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
"""(topic, key, value, headers) of one record a batch sends."""

FLUSH_BYTES = 800_000
"""A batch stops growing at this many bytes for one table or topic: one produce batch each
(the broker's default limit is 1 MiB), so a flush travels in one produce request."""
RECORD_OVERHEAD = 70  # bytes a record adds to a produce batch besides its key and value

_current: ContextVar[Staging | None] = ContextVar("staging", default=None)


class NotStaging(StatekeeperError):
    """A staged table was written outside a batch."""


class Staging:
    """The pending table writes and output records of one partition's batch."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.offset = -1
        """Source offset of the record being handled (-1 for clock work)."""
        self.timestamp_ms: int | None = None
        """Kafka timestamp of the record being handled (None for clock work)."""
        self.writes: dict[TableT, dict[bytes, bytes | None]] = {}
        self.outputs: list[Output] = []
        self.sizes: dict[object, int] = {}
        """Bytes staged per destination (table or topic), an upper bound."""

    def read(self, table: TableT, key: bytes) -> bytes | None:
        pending = self.writes.get(table)
        if pending is not None and key in pending:
            return pending[key]
        db = table.data._db_for_partition(self.partition)  # type: ignore[attr-defined]
        value: bytes | None = db.get(key)
        return value

    def write(self, table: TableT, key: bytes, value: bytes | None) -> None:
        self.writes.setdefault(table, {})[key] = value
        self._count(table, len(key) + (len(value) if value is not None else 0))

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, bytes] | None
    ) -> None:
        self.outputs.append((topic, key, value, list((headers or {}).items())))
        self._count(topic, len(value) + (len(key) if key is not None else 0))

    def _count(self, destination: object, size: int) -> None:
        self.sizes[destination] = self.sizes.get(destination, 0) + size + RECORD_OVERHEAD

    def full(self) -> bool:
        """True once one destination holds :data:`FLUSH_BYTES`: apply this batch now."""
        return bool(self.sizes) and max(self.sizes.values()) >= FLUSH_BYTES

    def __bool__(self) -> bool:
        return bool(self.writes) or bool(self.outputs)


@contextmanager
def staging(batch: Staging) -> Iterator[Staging]:
    """Make ``batch`` the target of staged reads, writes and sends in this task."""
    token = _current.set(batch)
    try:
        yield batch
    finally:
        _current.reset(token)


def current() -> Staging | None:
    """The batch being handled in this task, if any."""
    return _current.get()


def in_hand(what: str = "batched work") -> Staging:
    """The batch being handled in this task; :class:`NotStaging` outside one."""
    batch = _current.get()
    if batch is None:
        raise NotStaging(f"{what} outside a batch")
    return batch


def source_offset() -> int:
    """Offset of the input record being handled (-1 outside a record)."""
    batch = _current.get()
    return batch.offset if batch is not None else -1


class StagedTable:
    """A table view for batched handlers: reads through the batch, writes into it.

    Outside a batch (web views, other workers' queries) it reads the faust table.
    """

    def __init__(self, table: TableT) -> None:
        self.table = table

    def get(self, key: bytes) -> bytes | None:
        batch = _current.get()
        if batch is None:
            value: bytes | None = self.table.get(key)
            return value
        return batch.read(self.table, key)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        in_hand(f"{self.table.name} written").write(self.table, key, value)

    def __delitem__(self, key: bytes) -> None:
        """A tombstone, whether or not the key is present (replays rely on it)."""
        in_hand(f"{self.table.name} written").write(self.table, key, None)

    def __getattr__(self, name: str) -> Any:  # data, changelog_topic, name, … for scans
        return getattr(self.table, name)


async def emit(
    topic: str, key: bytes | None, value: bytes, headers: dict[str, bytes] | None = None
) -> None:
    """Send a record: with the batch when one is being handled, else through faust now."""
    batch = _current.get()
    if batch is not None:
        batch.send(topic, key, value, headers)
        return
    await app.topic(topic).send(key=key, value=value, headers=headers)
