"""Prefix scans as a batch sees them: RocksDB's rows overlaid with the batch's own writes."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from statekeeper.stores.scan import scan_prefix_staged
from statekeeper.stores.staged import Staging, staging


class SortedDB:
    """The part of a rocksdict database the scans use: ordered items from a key."""

    def __init__(self, rows: dict[bytes, bytes]) -> None:
        self.rows = rows

    def items(self, from_key: bytes) -> Iterator[tuple[bytes, bytes]]:
        return iter([(k, v) for k, v in sorted(self.rows.items()) if k >= from_key])


class Table:
    """A table with one partition's database (hashable: staged writes are keyed by table)."""

    name = "t"

    def __init__(self, rows: dict[bytes, bytes]) -> None:
        self.data = SimpleNamespace(_dbs={0: SortedDB(rows)})


def table_with(rows: dict[bytes, bytes]) -> Any:
    return Table(rows)


def test_the_batch_writes_and_deletes_win_over_rocksdb_in_key_order() -> None:
    table = table_with({b"u1/a": b"1", b"u1/b": b"2", b"u1/c": b"3", b"u2/a": b"x"})
    batch = Staging(0)
    batch.write(table, b"u1/b", None)  # deleted in the batch
    batch.write(table, b"u1/c", b"3'")  # rewritten
    batch.write(table, b"u1/0", b"new")  # appended, sorts first
    batch.write(table, b"u2/b", b"other user")
    with staging(batch):
        seen = scan_prefix_staged(table, 0, b"u1/")
    assert seen == [(b"u1/0", b"new"), (b"u1/a", b"1"), (b"u1/c", b"3'")]


def test_outside_a_batch_it_is_the_plain_scan() -> None:
    table = table_with({b"u1/a": b"1", b"u2/a": b"x"})
    assert scan_prefix_staged(table, 0, b"u1/") == [(b"u1/a", b"1")]


def test_the_batch_in_flight_behind_is_seen_under_the_batch_in_hand() -> None:
    table = table_with({b"u1/a": b"1", b"u1/b": b"2"})
    behind = Staging(0)
    behind.write(table, b"u1/a", None)  # deleted by the batch in flight
    behind.write(table, b"u1/c", b"3")  # written by it
    behind.write(table, b"u1/d", b"4")
    batch = Staging(0, behind=behind)
    batch.write(table, b"u1/a", b"1'")  # written again in the batch in hand
    batch.write(table, b"u1/d", None)
    with staging(batch):
        seen = scan_prefix_staged(table, 0, b"u1/")
    assert seen == [(b"u1/a", b"1'"), (b"u1/b", b"2"), (b"u1/c", b"3")]
