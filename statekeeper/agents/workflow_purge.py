"""Retention of finished workflow items: purged with their history when their time is up.

A completed or cancelled item gets a purge deadline (``workflow`` retention policy of its
tenant, counted from when it finished) in ``workflow-retention``, a deadline index beside
the item. The workflow agent runs :func:`purge_due` on each of its clock ticks: the item,
every history row and any SLA entry are tombstoned, the partition's counts drop by one
(and count one purge), and a ``workflow.purged`` notice goes to
``statekeeper.lifecycle.notices``. At most ``STATEKEEPER_LIFECYCLE_BATCH`` items per
partition and tick, so a wave of purges interleaves with item events. A tick replayed
after a crash re-sends its notices and tombstones from the tick journal.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.types import EventT

from statekeeper import codec
from statekeeper.app import app
from statekeeper.metrics import metrics
from statekeeper.stores import tick_journal
from statekeeper.stores.deadlines import deadline_key, due
from statekeeper.stores.scan import scan_prefix
from statekeeper.stores.tables import (
    workflow_counts,
    workflow_deadlines,
    workflow_history,
    workflow_items,
    workflow_retention,
)
from statekeeper.stores.tick_journal import tombstone
from statekeeper.stores.workflow import Counts, Item, counts_key, history_key, history_prefix

logger = logging.getLogger(__name__)

notices_topic = app.topic(app.topic_names.lifecycle_notices)


def schedule(key: bytes, before: Item | None, item: Item) -> None:
    """Keep the item's entry in the purge index in step with ``item.purge_at`` (in-stream)."""
    old = before.purge_at if before is not None else None
    if old == item.purge_at:
        return
    if old is not None:
        tombstone(workflow_retention, deadline_key(old, key))
    if item.purge_at is not None:
        workflow_retention[deadline_key(item.purge_at, key)] = codec.pack([item.version])


async def purge_due(event: EventT, now: int) -> None:
    """Replay a journaled tick, then purge the partition's items whose time is up."""
    partition, offset = event.message.partition, event.message.offset
    journaled = tick_journal.recorded(workflow_retention, partition, offset) or []
    for key, notice in journaled:  # the same tick again: a crash came before its commit
        await replay_purge(partition, key, notice)
    doomed: list[tuple[bytes, Item, bytes]] = []
    for entry in due(workflow_retention, partition, now, limit=app.settings.lifecycle_batch):
        stored = workflow_items.get(entry.record_key)
        item = Item.from_bytes(stored) if stored is not None else None
        if item is None or item.purge_at != entry.deadline:
            tombstone(workflow_retention, entry.index_key)  # stale entry
            continue
        doomed.append((entry.record_key, item, codec.pack(purged_notice(item))))
    if not doomed:
        return
    # Journal first: a crash in the middle of the batch leaves some items purged in RocksDB
    # with their notices unsent, and only the journal can name them afterwards.
    seen = {key for key, _ in journaled}
    fresh = [(key, notice) for key, _, notice in doomed if key not in seen]
    tick_journal.record(workflow_retention, partition, offset, journaled + fresh)
    for key, item, notice in doomed:
        await purge(partition, key, item, notice)


async def purge(partition: int, key: bytes, item: Item, notice: bytes) -> None:
    """Remove a finished item and everything kept about it; notice first."""
    await notices_topic.send(key=key, value=notice)
    for history_row, _ in list(scan_prefix(workflow_history, partition, history_prefix(key))):
        tombstone(workflow_history, history_row)
    if item.deadline is not None:
        tombstone(workflow_deadlines, deadline_key(item.deadline, key))
    tombstone(workflow_items, key)
    counter = counts_key(item.tenant, item.workflow)
    counts = Counts.from_bytes(workflow_counts.get(counter))
    counts.purge(item)
    workflow_counts[counter] = counts.to_bytes()
    assert item.purge_at is not None
    tombstone(workflow_retention, deadline_key(item.purge_at, key))
    metrics.purged["workflow"] += 1


async def replay_purge(partition: int, key: bytes, notice: bytes) -> None:
    """Send a purge notice again and rewrite its tombstones and counts (same bytes).

    Nothing is rewritten if the key holds a newer item (started again after the purge).
    """
    await notices_topic.send(key=key, value=notice)
    if workflow_items.get(key) is not None:
        return
    purged = codec.unpack(notice)
    for version in range(1, purged["version"] + 1):
        tombstone(workflow_history, history_key(key, version))
    tombstone(workflow_items, key)
    tombstone(workflow_retention, deadline_key(purged["purge_at"], key))
    counter = counts_key(purged["tenant"], purged["workflow"])
    current = workflow_counts.get(counter)
    if current is not None:
        workflow_counts[counter] = current
    metrics.replayed += 1
    logger.info("replayed the purge of %r after a restart", key)


def purged_notice(item: Item) -> dict[str, Any]:
    """``workflow.purged``: only stored values, so a repeat after a crash is identical."""
    return {
        "v": 1,
        "type": "workflow.purged",
        "tenant": item.tenant,
        "key": item.key,
        "workflow": item.workflow,
        "state": item.state,
        "condition": item.condition,
        "version": item.version,
        "updated_at": item.updated_at,
        "purge_at": item.purge_at,
        "ts": item.purge_at,
    }
