"""Bulk restore of table partitions from their changelogs, ahead of faust's own recovery.

faust recovers a table partition record by record through its consumer, its changelog
queue and per-event bookkeeping: about 5,000 keys/s on our machine (README "Performance"),
so a worker with a wiped data dir and a few million keys takes minutes to become ready.
Every table here is written by the batched path, whose changelogs are plain compacted
key/value logs, so nothing per record is needed to restore one: this module reads each
assigned partition that is far behind with its own aiokafka consumer (``getmany``, no
group) and writes RocksDB in one write batch per fetch, with faust's persisted changelog
offset inside it. faust's recovery then starts from that offset and reads only the rest.

It runs when faust has built the highwaters of its active partitions and is about to read
their start offsets (:mod:`statekeeper.faust_fixes`), so nothing else writes them yet.
The work is bounded by :data:`BUDGET_SHARE` of faust's ``broker_request_timeout``, the time
faust gives that step: what is not restored by then is left to faust, from the offset
reached. A restore stopped half-way (crash, new rebalance) keeps what it wrote: each
write batch carries its own offset, so it is a consistent prefix of the changelog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP
from rocksdict import WriteBatch

from statekeeper.connections import kafka_options
from statekeeper.settings import Settings

logger = logging.getLogger(__name__)

OFFSET_KEY = RocksDBStore.offset_key  # where faust keeps a partition's changelog offset
BUDGET_SHARE = 0.6  # of broker_request_timeout, the time faust allows this step
FETCH_RECORDS = 20_000


class Partition:
    """One changelog partition to restore: where it is and where it must get to."""

    __slots__ = ("tp", "db", "offset", "highwater", "restored")

    def __init__(self, tp: TP, db: Any, offset: int, highwater: int) -> None:
        self.tp = tp
        self.db = db
        self.offset = offset  # last changelog offset in RocksDB (-1: none)
        self.highwater = highwater  # last offset to restore, faust's figure
        self.restored = 0


def behind(
    recovery: Any, tps: set[TP], offsets: MutableMapping[TP, int | None], at_least: int
) -> list[Partition]:
    """The active partitions of RocksDB tables at least ``at_least`` records behind."""
    found = []
    for tp in sorted(tps):
        table = recovery.tp_to_table.get(tp)
        store: Any = getattr(table, "data", None)
        highwater = recovery.active_highwaters.get(tp)
        if highwater is None or not hasattr(store, "_db_for_partition"):
            continue
        offset = offsets.get(tp)
        offset = -1 if offset is None else offset
        if highwater - offset >= at_least:
            found.append(Partition(tp, store._db_for_partition(tp.partition), offset, highwater))
    return found


async def restore(
    settings: Settings,
    recovery: Any,
    tps: set[TP],
    offsets: MutableMapping[TP, int | None],
    budget_s: float,
) -> None:
    """Restore what is far behind in ``tps``; ``offsets`` follow (faust's start offsets)."""
    far = behind(recovery, tps, offsets, settings.restore_min_records)
    work = {TopicPartition(p.tp.topic, p.tp.partition): p for p in far}
    if not work:
        return
    began = time.monotonic()
    total = sum(p.highwater - p.offset for p in work.values())
    logger.info(
        "restoring %d table partitions from their changelogs in bulk (up to %d records)",
        len(work), total,
    )  # fmt: skip
    consumer = AIOKafkaConsumer(
        **kafka_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 2**20,
        fetch_max_bytes=64 * 2**20,
    )
    await consumer.start()
    restored = 0
    try:
        consumer.assign(list(work))
        for atp, part in work.items():
            consumer.seek(atp, part.offset + 1)
        pending = dict(work)
        next_report = began + 5.0
        while pending and time.monotonic() - began < budget_s:
            fetched = await consumer.getmany(*pending, timeout_ms=500, max_records=FETCH_RECORDS)
            for atp, records in fetched.items():
                if atp in pending:
                    restored += _write(pending[atp], records)
                    offsets[pending[atp].tp] = pending[atp].offset
            for atp in [atp for atp, part in pending.items() if part.offset >= part.highwater]:
                del pending[atp]
            for atp, part in list(pending.items()):  # compaction can leave no record at the end
                if await consumer.position(atp) > part.highwater:
                    _finish(part)
                    offsets[part.tp] = part.offset
                    del pending[atp]
            if time.monotonic() >= next_report:
                next_report += 5.0
                logger.info("restored %d of up to %d changelog records", restored, total)
        if pending:
            logger.warning(
                "bulk restore stopped after %.0f s with %d partitions behind; faust's "
                "recovery reads the rest", budget_s, len(pending),
            )  # fmt: skip
    finally:
        await consumer.stop()
        elapsed = time.monotonic() - began
        logger.info(
            "bulk restore: %d records in %.1f s (%.0f/s)",
            restored, elapsed, restored / elapsed if elapsed else 0.0,
        )  # fmt: skip


def _write(part: Partition, records: list[Any]) -> int:
    """One RocksDB write batch: the records up to the highwater, then their offset."""
    rows = WriteBatch(raw_mode=True)
    count, last = 0, part.offset
    for record in records:
        if record.offset > part.highwater:
            break
        if record.value is None:
            rows.delete(record.key)
        else:
            rows.put(record.key, record.value)
        count, last = count + 1, record.offset
    if count:
        rows.put(OFFSET_KEY, str(last).encode())
        part.db.write(rows)
        part.offset = last
        part.restored += count
    return count


def _finish(part: Partition) -> None:
    """Nothing is left up to the highwater: record it as the partition's offset."""
    if part.offset < part.highwater:
        part.db.put(OFFSET_KEY, str(part.highwater).encode())
        part.offset = part.highwater
