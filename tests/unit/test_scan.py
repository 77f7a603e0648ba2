"""Prefix scans as a batch sees them: RocksDB's rows overlaid with the batch's own writes."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from statekeeper.stores.scan import active_partitions, owner_url, read_key, scan_prefix_staged
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


def test_owned_partitions_follow_each_new_assignment() -> None:
    class Assignor:
        def __init__(self) -> None:
            self.calls = 0
            self.assign({"items-changelog": [1, 3], "other-changelog": [0]})

        def assign(self, actives: dict[str, list[int]]) -> None:
            self._assignment = SimpleNamespace(actives=actives)  # faust replaces it too

        def assigned_actives(self) -> set[TP]:
            self.calls += 1
            return {TP(t, p) for t, ps in self._assignment.actives.items() for p in ps}

    assignor = Assignor()
    app: Any = SimpleNamespace(assignor=assignor)
    table: Any = SimpleNamespace(
        changelog_topic=SimpleNamespace(get_topic_name=lambda: "items-changelog")
    )
    assert active_partitions(app, table) == {1, 3}
    owned = active_partitions(app, table)
    assert owned == {1, 3} and assignor.calls == 1  # the same assignment: asked once
    owned.add(7)  # a caller's copy
    assert active_partitions(app, table) == {1, 3}
    assignor.assign({"items-changelog": [2]})
    assert active_partitions(app, table) == {2} and assignor.calls == 2


def test_a_point_read_asks_only_the_key_s_partition() -> None:
    dbs = {0: {b"k": b"in 0"}, 1: {b"k": b"in 1"}}
    table: Any = SimpleNamespace(data=SimpleNamespace(_dbs=dbs))
    assert read_key(table, 1, b"k") == b"in 1"
    assert read_key(table, 0, b"missing") is None
    assert read_key(table, 5, b"k") is None  # not opened on this worker
    other_store: Any = SimpleNamespace(data=SimpleNamespace(), get={b"k": b"faust"}.get)
    assert read_key(other_store, 0, b"k") == b"faust"


def test_the_owner_of_a_partition_comes_from_faust_s_map() -> None:
    urls = {TP("items-changelog", 2): "http://w1:6066"}
    app: Any = SimpleNamespace(assignor=SimpleNamespace(_tps_url=urls))
    table: Any = SimpleNamespace(
        changelog_topic=SimpleNamespace(get_topic_name=lambda: "items-changelog")
    )
    assert owner_url(app, table, 2) == "http://w1:6066"
    assert owner_url(app, table, 3) is None  # not known yet: the caller answers 503
