"""Reading a RocksDB-backed faust table partition by partition, outside stream processing.

faust answers point reads; listings, counts and deadlines need ordered prefix scans of the
partitions this worker owns. This module is the one place that reaches into the store
(``RocksDBStore._dbs``, rocksdict ``items(from_key=...)``), so the rest stays on public API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.types import TP, AppT, TableT

from statekeeper.exceptions import StatekeeperError
from statekeeper.stores import staged


class ScanUnsupported(StatekeeperError):
    """The table's store cannot scan (only ``rocksdb://`` can)."""


_owned: dict[str, tuple[object, frozenset[int]]] = {}
"""Changelog topic -> (faust's assignment, the partitions it gives this worker)."""


def active_partitions(app: AppT, table: TableT) -> set[int]:
    """Partitions of ``table`` this worker owns (standby copies excluded).

    faust builds a set of every assigned topic partition per call (hundreds with all the
    changelogs), and the batched runners ask each cycle: the answer is kept for as long as
    the assignor holds the same assignment object (it gets a new one at each rebalance).
    """
    changelog = table.changelog_topic.get_topic_name()
    assignment = getattr(app.assignor, "_assignment", None)
    kept = _owned.get(changelog)
    if assignment is not None and kept is not None and kept[0] is assignment:
        return set(kept[1])
    owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog}
    if assignment is not None:
        _owned[changelog] = (assignment, frozenset(owned))
    return owned


def owner_urls(app: AppT, table: TableT, partitions: int) -> dict[int, str]:
    """Partition -> URL of the worker owning it, for partitions whose owner is known."""
    owners = {p: owner_url(app, table, p) for p in range(partitions)}
    return {p: url for p, url in owners.items() if url is not None}


def owner_url(app: AppT, table: TableT, partition: int) -> str | None:
    """URL of the worker owning ``partition`` of ``table``; None while it is not known.

    faust's router answers the same from the same map, after hashing the key again through
    its producer: a few hundred microseconds per point query.
    """
    urls: dict[TP, str] = getattr(app.assignor, "_tps_url", {})
    url = urls.get(TP(table.changelog_topic.get_topic_name(), partition))
    return None if url is None else str(url)


def read_key(table: TableT, partition: int, key: bytes) -> bytes | None:
    """``key``'s value in one partition, read from RocksDB.

    Outside a stream faust does not know a key's partition and asks each partition's
    database whether it may hold the key; the caller knows it (keys are hashed as the
    producer hashed them). Any other store is read through faust.
    """
    dbs = getattr(table.data, "_dbs", None)
    if dbs is None:
        stored: bytes | None = table.get(key)
        return stored
    db = dbs.get(partition)
    if db is None:  # not opened (yet) on this worker: faust knows no more
        return None
    value: bytes | None = db.get(key)
    return value


def _db(table: TableT, partition: int) -> Any:
    dbs = getattr(table.data, "_dbs", None)
    if dbs is None:
        raise ScanUnsupported("listing needs the rocksdb:// store (STATEKEEPER_STORE)")
    return dbs.get(partition)


def scan_prefix(
    table: TableT, partition: int, prefix: bytes, *, after: bytes | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """Keys starting with ``prefix`` in one partition, in key order, after ``after``."""
    db = _db(table, partition)
    if db is None:
        return
    start = after + b"\x00" if after is not None else prefix
    for key, value in db.items(from_key=start):
        if not key.startswith(prefix):
            return
        yield key, value


def scan_range(
    table: TableT, partition: int, start: bytes, stop: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """Keys in ``[start, stop)`` of one partition, in key order."""
    db = _db(table, partition)
    if db is None:
        return
    for key, value in db.items(from_key=start):
        if key >= stop:
            return
        yield key, value


def get_in_partition(table: TableT, partition: int, key: bytes) -> bytes | None:
    """Point read from one partition's database (no search across partitions)."""
    db = _db(table, partition)
    return None if db is None else db.get(key)


def scan_prefix_staged(table: TableT, partition: int, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """:func:`scan_prefix` as the batch in hand sees it: pending writes and deletes win
    (its own, and those of the batch before it while that one travels).

    The batched path keeps a batch's writes in memory until Kafka has them
    (:mod:`statekeeper.stores.staged`); a handler that scans what earlier records of the
    same batch wrote must read through them. Outside a batch it is a plain scan. The rows
    are collected in memory, so keep it to one entity's rows.
    """
    rows = dict(scan_prefix(table, partition, prefix))
    batch = staged.current()
    for writes in batch.pending(table) if batch is not None else []:
        for key, value in writes.items():
            if not key.startswith(prefix):
                continue
            if value is None:
                rows.pop(key, None)
            else:
                rows[key] = value
    return sorted(rows.items())
