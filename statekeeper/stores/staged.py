"""Staged writes: what one input batch changes, kept in memory until Kafka has all of it.

The batched workflow path (:mod:`statekeeper.agents.batched`) does not write faust tables
record by record. Handlers read and write :class:`StagedTable` views; the writes of one
partition's batch collect in a :class:`Staging` (the last value per key wins, so a key
written by many events costs one changelog record), and so do the records the batch sends
(status changes, notices, dead letters). The batch runner then produces everything, waits
for every acknowledgement, commits the input offset and only then writes RocksDB, one
write batch per table partition, with faust's persisted changelog offset inside it.

Reads see the batch's own writes first, then those of the partition's previous batch while
Kafka has not acknowledged it yet (the runner handles a batch while the one before it
travels), then the partition's RocksDB. Scans (:mod:`statekeeper.stores.scan`) read
RocksDB only, except :func:`~statekeeper.stores.scan.scan_prefix_staged`: the runner
handles clock work (due deadlines, purges) at the start of a batch, with no batch in
flight, before any event of it is staged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from faust.types import TableT

from statekeeper.app import app
from statekeeper.exceptions import StatekeeperError

Headers = list[tuple[str, bytes]]
Output = tuple[str, bytes | None, bytes, Headers]
"""(topic, key, value, headers) of one record a batch sends."""
NO_HEADERS: Headers = []  # shared by every record without headers: never changed

FLUSH_BYTES = 800_000
"""A batch stops growing at this many bytes for one table or topic: one produce batch each
(the broker's default limit is 1 MiB), so a flush travels in one produce request."""
RECORD_OVERHEAD = 70  # bytes a record adds to a produce batch besides its key and value

_current: ContextVar[Staging | None] = ContextVar("staging", default=None)


class NotStaging(StatekeeperError):
    """A staged table was written outside a batch."""


class Encodable(Protocol):
    """A row kept as an object for the batch (:meth:`Staging.keep`)."""

    def to_bytes(self) -> bytes: ...


Row = TypeVar("Row", bound=Encodable)


class Staging:
    """The pending table writes and output records of one partition's batch."""

    def __init__(self, partition: int, behind: Staging | None = None) -> None:
        self.partition = partition
        self.behind = behind
        """The partition's previous batch while Kafka has not acknowledged it (sealed, not
        in RocksDB yet): reads see its writes. The runner drops it once it is written."""
        self.offset = -1
        """Source offset of the record being handled (-1 for clock work)."""
        self.timestamp_ms: int | None = None
        """Kafka timestamp of the record being handled (None for clock work)."""
        self.writes: dict[TableT, dict[bytes, bytes | None]] = {}
        self.kept: dict[TableT, dict[bytes, Encodable]] = {}
        """Rows staged as objects, encoded once by :meth:`seal` (see :meth:`keep`)."""
        self.outputs: list[Output] = []
        self.notes: set[Any] = set()
        """What handlers noted for their pattern's work once the batch is in RocksDB
        (cache tags to invalidate): the runner hands them to its ``after_write``."""
        self.sizes: dict[object, int] = {}
        """Bytes staged per destination (table or topic), an upper bound."""
        self.largest = 0
        """The largest of :attr:`sizes`."""
        self.databases: dict[TableT, Any] = {}
        """Each table's RocksDB database of this partition, looked up once per batch
        (faust's lookup is two Python calls; the runner holds the partition meanwhile)."""

    def event_time(self, now: int) -> int:
        """The record's timestamp, never ahead of ``now``: the same each time the record is
        handled (after a crash, or when a failed flush makes the batch be handled again)."""
        stamp = self.timestamp_ms
        return min(stamp, now) if stamp else now

    def read(self, table: TableT, key: bytes) -> bytes | None:
        if self.kept:
            kept = self.kept.get(table)
            if kept is not None and key in kept:
                return kept[key].to_bytes()
        pending = self.writes.get(table)
        if pending is not None and key in pending:
            return pending[key]
        behind = self.behind
        if behind is not None:
            pending = behind.writes.get(table)
            if pending is not None and key in pending:
                return pending[key]
        db = self.databases.get(table)
        if db is None:
            db = self.databases[table] = self.database(table)
        value: bytes | None = db.get(key)
        return value

    def database(self, table: TableT) -> Any:
        """``table``'s RocksDB database of this batch's partition."""
        return table.data._db_for_partition(self.partition)  # type: ignore[attr-defined]

    def pending(self, table: TableT) -> list[dict[bytes, bytes | None]]:
        """The writes to ``table`` not in RocksDB yet, as reads see them: oldest first."""
        chain = [self.writes.get(table)]
        if self.behind is not None:
            chain.append(self.behind.writes.get(table))
        return [writes for writes in reversed(chain) if writes]

    def write(self, table: TableT, key: bytes, value: bytes | None) -> None:
        pending = self.writes.get(table)
        if pending is None:
            pending = self.writes[table] = {}
        pending[key] = value
        self._count(table, len(key) + (len(value) if value is not None else 0))

    def keep(self, table: TableT, key: bytes, value: Encodable) -> None:
        """Stage ``value`` as an object: the batch's later records change it in place.

        For a row most records of a batch change (a partition's counts), so it is decoded
        once and encoded once per batch instead of once per record. The runner encodes it
        when the batch is done (:meth:`seal`); a row kept in a batch is not also written
        in it, except as its sealed bytes when the batch takes records after a seal. Its
        size counts once, as it is now (rows that barely grow), sealed or not.
        """
        rows = self.kept.get(table)
        if rows is None:
            rows = self.kept[table] = {}
        if key not in rows and key not in self.writes.get(table, ()):
            self._count(table, len(key) + len(value.to_bytes()))
        rows[key] = value

    def kept_value(self, table: TableT, key: bytes) -> Any:
        """The object :meth:`keep` holds for ``key`` in this batch, or None."""
        rows = self.kept.get(table)
        return rows.get(key) if rows is not None else None

    def kept_row(self, table: TableT, key: bytes, decode: Callable[[bytes | None], Row]) -> Row:
        """The row as an object kept for this batch (:meth:`keep`).

        Decoded from the staged or stored bytes on first use in the batch; change it in
        place, it is encoded when the batch is sealed.
        """
        row: Row | None = self.kept_value(table, key)
        if row is None:
            row = decode(self.read(table, key))
            self.keep(table, key, row)
        return row

    def seal(self) -> None:
        """Encode the kept rows into the batch's writes, before the batch is built. The
        runner may give it more records after (:meth:`BatchedInput._batch`): a row they
        change is decoded from those bytes and kept again."""
        for table, rows in self.kept.items():
            pending = self.writes.setdefault(table, {})
            for key, value in rows.items():
                pending[key] = value.to_bytes()
        self.kept = {}

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, bytes] | None
    ) -> None:
        self.outputs.append((topic, key, value, list(headers.items()) if headers else NO_HEADERS))
        self._count(topic, len(value) + (len(key) if key is not None else 0))

    def _count(self, destination: object, size: int) -> None:
        total = self.sizes[destination] = self.sizes.get(destination, 0) + size + RECORD_OVERHEAD
        if total > self.largest:
            self.largest = total

    def full(self) -> bool:
        """True once one destination holds :data:`FLUSH_BYTES`: apply this batch now."""
        return self.largest >= FLUSH_BYTES

    def __bool__(self) -> bool:
        return bool(self.writes) or bool(self.kept) or bool(self.outputs)


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
        self._batch().write(self.table, key, value)

    def __delitem__(self, key: bytes) -> None:
        """A tombstone, whether or not the key is present (replays rely on it)."""
        self._batch().write(self.table, key, None)

    def kept(self, key: bytes, decode: Callable[[bytes | None], Row]) -> Row:
        """The row as an object kept for the batch in hand (:meth:`Staging.kept_row`)."""
        return self._batch().kept_row(self.table, key, decode)

    def _batch(self) -> Staging:
        batch = _current.get()
        if batch is None:  # the message only now: writes are the hot path
            raise NotStaging(f"{self.table.name} written outside a batch")
        return batch

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
