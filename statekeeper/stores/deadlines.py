"""Deadline indexes: entities ordered by when something must happen to them.

Every pattern that expires things (SLA notices, idle sessions, resource TTLs, retention)
keeps one of these beside its entity table, in the same partitions. A key is the deadline
(8 bytes, big-endian milliseconds) followed by the entity's record key, so one ordered scan
of a partition up to "now" yields exactly what is due, oldest first.

Why not faust's windowed tables: their expiry keeps a heap in memory only (keys restored
from a changelog never expire, faust #385), runs on wall-clock sweeps and deletes without
writing changelog tombstones. An index like this one lives in a RocksDB table with a
changelog, so deadlines survive restarts and rebalances, and removing an entry (or the
entity it points at) tombstones it for good.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from faust.types import TableT

from statekeeper.stores.scan import scan_range

_WIDTH = 8

LEGACY_JOURNAL = b"\xff\xfftick-journal\x00"
"""Where versions before the batched path journaled clock ticks in an index: keys after
every deadline, so never due; listings stop there (entries left by an upgrade are inert)."""


class DueEntry(NamedTuple):
    """One index entry whose deadline has passed."""

    index_key: bytes
    deadline: int
    record_key: bytes
    value: bytes


def deadline_key(deadline_ms: int, record_key: bytes) -> bytes:
    """Index key of ``record_key`` due at ``deadline_ms``."""
    return max(deadline_ms, 0).to_bytes(_WIDTH, "big") + record_key


def split_deadline_key(index_key: bytes) -> tuple[int, bytes]:
    """(deadline ms, record key) of an index key."""
    return int.from_bytes(index_key[:_WIDTH], "big"), index_key[_WIDTH:]


def due(table: TableT, partition: int, now_ms: int, *, limit: int | None = None) -> list[DueEntry]:
    """Entries of one partition due at ``now_ms`` or before, oldest first.

    ``limit`` bounds one pass, so a wave of expiries is worked off over several ticks
    instead of stalling the events queued behind one tick.
    """
    found: list[DueEntry] = []
    for key, value in scan_range(table, partition, b"", deadline_key(now_ms + 1, b"")):
        deadline, record_key = split_deadline_key(key)
        found.append(DueEntry(key, deadline, record_key, value))
        if limit is not None and len(found) >= limit:
            break
    return found


def iter_due(table: TableT, partition: int, now_ms: int) -> Iterator[DueEntry]:
    """Like :func:`due`, lazily (for read-only queries)."""
    for key, value in scan_range(table, partition, b"", deadline_key(now_ms + 1, b"")):
        deadline, record_key = split_deadline_key(key)
        yield DueEntry(key, deadline, record_key, value)
