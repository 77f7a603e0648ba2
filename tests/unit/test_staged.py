"""A batch's staged writes: last value per key, and the size cap that keeps a flush whole."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from statekeeper.stores.staged import (
    FLUSH_BYTES,
    StagedTable,
    Staging,
    current,
    source_offset,
    staging,
)
from statekeeper.stores.workflow import Counts


def test_last_value_per_key_wins_and_tombstones_are_kept() -> None:
    table = cast(Any, object())  # only used as a dict key by Staging.write
    batch = Staging(3)
    batch.write(table, b"k", b"1")
    batch.write(table, b"k", b"2")
    batch.write(table, b"gone", None)
    assert batch.writes[table] == {b"k": b"2", b"gone": None}
    assert bool(batch)


def test_a_batch_is_full_once_one_destination_reaches_the_cap() -> None:
    table = cast(Any, object())
    batch = Staging(0)
    row = b"x" * 10_000
    n = 0
    while not batch.full():
        batch.write(table, n.to_bytes(4, "big"), row)
        n += 1
    assert FLUSH_BYTES // 10_100 <= n <= FLUSH_BYTES // 10_000 + 1
    other = Staging(0)
    for m in range(50):  # the same bytes spread over two destinations: not full
        other.send("status", m.to_bytes(4, "big"), row, None)
        other.write(table, m.to_bytes(4, "big"), row)
    assert not other.full()


def test_the_current_batch_and_offset_are_scoped_to_the_context() -> None:
    assert current() is None and source_offset() == -1
    batch = Staging(1)
    batch.offset = 42
    with staging(batch):
        assert current() is batch and source_offset() == 42
    assert current() is None


class EmptyTable:
    """A table whose partitions' databases hold nothing (``Staging.read`` falls back to them)."""

    name = "t"
    data = SimpleNamespace(_db_for_partition=lambda _: {})


def test_a_kept_row_is_decoded_once_and_encoded_when_the_batch_is_sealed() -> None:
    table = cast(Any, EmptyTable())
    batch = Staging(0)
    batch.write(table, b"c", Counts({"a": 1}, {"active": 1}).to_bytes())  # earlier in the batch
    decoded: list[bytes | None] = []

    def decode(raw: bytes | None) -> Counts:
        decoded.append(raw)
        return Counts.from_bytes(raw)

    view = StagedTable(table)
    with staging(batch):
        view.kept(b"c", decode).states["a"] += 1
        view.kept(b"c", decode).states["a"] += 1
        assert Counts.from_bytes(view.get(b"c")).states == {"a": 3}  # reads see the object
        view.kept(b"new", decode).states["b"] = 1
    assert len(decoded) == 2  # once per key
    batch.seal()
    assert Counts.from_bytes(batch.writes[table][b"c"]).states == {"a": 3}
    assert Counts.from_bytes(batch.writes[table][b"new"]).states == {"b": 1}
    assert not batch.kept


def test_a_batch_extended_after_its_seal_keeps_the_row_again_and_counts_it_once() -> None:
    table = cast(Any, EmptyTable())
    batch = Staging(0)
    view = StagedTable(table)
    with staging(batch):
        view.kept(b"c", Counts.from_bytes).states["a"] = 1
    size = batch.sizes[table]
    batch.seal()  # built, then the runner gives it the records fetched meanwhile
    with staging(batch):
        view.kept(b"c", Counts.from_bytes).states["a"] += 1
    assert batch.sizes[table] == size
    batch.seal()
    assert Counts.from_bytes(batch.writes[table][b"c"]).states == {"a": 2}


def test_event_time_is_the_record_timestamp_never_ahead_of_the_clock() -> None:
    batch = Staging(0)
    assert batch.event_time(5_000) == 5_000  # clock work: no record timestamp
    batch.timestamp_ms = 4_000
    assert batch.event_time(5_000) == 4_000
    batch.timestamp_ms = 9_000  # a producer clock ahead of ours
    assert batch.event_time(5_000) == 5_000


class StoredTable:
    """A table whose partitions' databases hold three rows."""

    name = "t"
    data = SimpleNamespace(
        _db_for_partition=lambda _: {b"old": b"db", b"both": b"db", b"dropped": b"db"}
    )


def test_reads_see_the_batch_in_flight_behind_then_the_database() -> None:
    table = cast(Any, StoredTable())
    behind = Staging(0)
    behind.write(table, b"both", b"behind")
    behind.write(table, b"dropped", None)
    behind.write(table, b"mine", b"behind")
    behind.seal()
    batch = Staging(0, behind=behind)
    batch.write(table, b"mine", b"now")
    assert batch.read(table, b"old") == b"db"
    assert batch.read(table, b"both") == b"behind"
    assert batch.read(table, b"dropped") is None  # a tombstone in flight hides the row
    assert batch.read(table, b"mine") == b"now"
    assert batch.pending(table) == [behind.writes[table], batch.writes[table]]
    batch.behind = None  # written: RocksDB answers for it now
    assert batch.read(table, b"both") == b"db"
