"""Retention of finished workflow items: purged with their history when their time is up.

A completed or cancelled item gets a purge deadline (``workflow`` retention policy of its
tenant, counted from when it finished) in ``workflow-retention``, a deadline index beside
the item. The workflow runner calls :func:`purge_due` for each owned partition between
batches: the item, every history row and any SLA entry are tombstoned, the partition's
counts drop by one (and count one purge), and a ``workflow.purged`` notice goes to
``statekeeper.lifecycle.notices``. At most ``STATEKEEPER_LIFECYCLE_BATCH`` items per
partition at a time, so a wave of purges interleaves with item events. The writes are
staged like an event's: RocksDB loses the items only after the notices and tombstones
are acknowledged, so a crash before that finds them due again and purges them again
(the same notice bytes).
"""

from __future__ import annotations

import logging
from typing import Any

from statekeeper import codec
from statekeeper.app import app
from statekeeper.metrics import metrics
from statekeeper.stores.deadlines import deadline_key, due
from statekeeper.stores.scan import scan_prefix
from statekeeper.stores.staged import emit, in_hand
from statekeeper.stores.tables import (
    staged_counts,
    staged_deadlines,
    staged_history,
    staged_items,
    staged_retention,
    workflow_history,
    workflow_retention,
)
from statekeeper.stores.workflow import Counts, Item, counts_key, history_prefix

logger = logging.getLogger(__name__)

notices_name = app.topic_names.lifecycle_notices


def schedule(key: bytes, before: Item | None, item: Item) -> None:
    """Keep the item's entry in the purge index in step with ``item.purge_at`` (in-stream)."""
    old = before.purge_at if before is not None else None
    if old == item.purge_at:
        return
    if old is not None:
        del staged_retention[deadline_key(old, key)]
    if item.purge_at is not None:
        staged_retention[deadline_key(item.purge_at, key)] = codec.pack([item.version])


async def purge_due(partition: int, now: int) -> None:
    """Purge the partition's finished items whose time is up (staged, see above)."""
    batch = in_hand()
    for entry in due(workflow_retention, partition, now, limit=app.settings.lifecycle_batch):
        if batch.full():
            return  # the rest next round: one flush stays one produce request
        stored = staged_items.get(entry.record_key)
        item = Item.from_bytes(stored) if stored is not None else None
        if item is None or item.purge_at != entry.deadline:
            del staged_retention[entry.index_key]  # stale entry
            continue
        await purge(partition, entry.record_key, item)


async def purge(partition: int, key: bytes, item: Item) -> None:
    """Remove a finished item and everything kept about it; notice first."""
    await emit(notices_name, key, codec.pack(purged_notice(item)))
    for history_row, _ in list(scan_prefix(workflow_history, partition, history_prefix(key))):
        del staged_history[history_row]
    if item.deadline is not None:
        del staged_deadlines[deadline_key(item.deadline, key)]
    del staged_items[key]
    staged_counts.kept(counts_key(item.tenant, item.workflow), Counts.from_bytes).purge(item)
    assert item.purge_at is not None
    del staged_retention[deadline_key(item.purge_at, key)]
    metrics.purged["workflow"] += 1


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
