"""What a clock tick ended, kept so that a tick replayed after a crash re-sends it.

A tick that expires or purges entities deletes their rows at once in RocksDB, while its
notices and changelog tombstones are only acknowledged later (faust flushes the producer
before it commits the tick's offset). After a crash the tick is delivered again, but its
entities are already gone from the local store, so a plain pass would find nothing due
and the unsent notices would be lost. So each such tick records, under its own offset,
the record keys it ended and the exact notice bytes; the same offset coming back replays
them: the notices are sent again (identical bytes) and the tombstones written again.

The journal lives in the pattern's deadline index, under keys that sort after every
deadline (``0xFFFF`` prefix), so :func:`~statekeeper.stores.deadlines.due` never sees it.
Only the last :data:`KEEP_TICKS` ticks of a partition are kept: far more than the ticks
between two offset commits.
"""

from __future__ import annotations

import contextlib

from faust.types import TableT

from statekeeper import codec
from statekeeper.stores.scan import get_in_partition, scan_prefix

PREFIX = b"\xff\xfftick-journal\x00"
KEEP_TICKS = 64

Entry = tuple[bytes, bytes]
"""(record key, notice bytes) of one entity a tick ended."""


def journal_key(offset: int) -> bytes:
    return PREFIX + offset.to_bytes(8, "big")


def recorded(table: TableT, partition: int, offset: int) -> list[Entry] | None:
    """What the tick at ``offset`` ended when it was processed before; None if nothing."""
    raw = get_in_partition(table, partition, journal_key(offset))
    if raw is None:
        return None
    return [(key, notice) for key, notice in codec.unpack(raw)]


def record(table: TableT, partition: int, offset: int, entries: list[Entry]) -> None:
    """Journal the tick at ``offset`` (call in-stream) and drop entries of old ticks."""
    table[journal_key(offset)] = codec.pack([list(entry) for entry in entries])
    stale = [
        key
        for key, _ in scan_prefix(table, partition, PREFIX)
        if int.from_bytes(key[len(PREFIX) :], "big") < offset - KEEP_TICKS
    ]
    for key in stale:
        tombstone(table, key)


def tombstone(table: TableT, key: bytes) -> None:
    """Delete ``key`` and write its changelog tombstone, present locally or not.

    Replays rely on this: a row already gone from RocksDB may still lack its tombstone in
    the changelog, so deleting it again must send one.
    """
    with contextlib.suppress(KeyError):  # the memory store refuses a missing key
        del table[key]
