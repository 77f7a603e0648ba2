"""State management: item events applied to the workflow tables, one status record each.

For every applied change, in the item's partition: the item is rewritten, one history
entry is added, the partition's counts move, the SLA deadline index follows the item, and
one record goes to ``statekeeper.workflow.status``. Item events take the batched path
(:mod:`statekeeper.agents.batched`): a partition's records are applied in order and its
writes land together, after Kafka has acknowledged them. The same runner does the clock
work of each owned partition between batches: ``workflow.stuck`` notices for passed SLAs
and purges of finished items past retention. Once a batch is in RocksDB, the cached
results of the workflows it changed are invalidated (:mod:`~statekeeper.agents.cache_invalidation`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import ConsumerRecord

from statekeeper import codec
from statekeeper.agents.batched import BatchedInput
from statekeeper.agents.cache_invalidation import invalidate_changed, note_change
from statekeeper.agents.clock import now_ms
from statekeeper.agents.definitions import lookup, registry
from statekeeper.agents.pipeline import EventPipeline
from statekeeper.agents.workflow_purge import purge_due, schedule
from statekeeper.app import app
from statekeeper.compiled import compiled_module
from statekeeper.metrics import metrics
from statekeeper.stores.deadlines import deadline_key, due
from statekeeper.stores.retention import policy_for
from statekeeper.stores.staged import (
    FLUSH_BYTES,
    NO_HEADERS,
    RECORD_OVERHEAD,
    Staging,
    emit,
    in_hand,
)
from statekeeper.stores.tables import (
    staged_deadlines,
    staged_items,
    workflow_counts,
    workflow_deadlines,
    workflow_history,
    workflow_items,
    workflow_retention,
)
from statekeeper.stores.workflow import (
    ITEM_TYPES,
    RECENT_IDS,
    Change,
    Counts,
    Item,
    Replay,
    apply_event,
    counts_key,
    history_key,
)
from statekeeper.topics.envelope import Envelope

logger = logging.getLogger(__name__)

events_name = app.topic_names.workflow_events
status_name = app.topic_names.workflow_status
notices_name = app.topic_names.lifecycle_notices


async def handle_item_event(envelope: Envelope) -> bool:
    """Apply one item event; False when it is a redelivery with no effect.

    The hot path: it works on the batch in hand directly (the staged table views of
    :mod:`~statekeeper.stores.tables` would look the batch up for every read and write).
    """
    batch = in_hand("a workflow item event")
    key = envelope.record_key
    stored = batch.read(workflow_items, key)
    before = Item.from_bytes(stored) if stored is not None else None
    workflow = before.workflow if before is not None else envelope.data.get("workflow")
    definition = None
    if isinstance(workflow, str):  # the registry has it, or the follower reads it first
        definition = registry.get(envelope.tenant, workflow) or await lookup(
            envelope.tenant, workflow
        )
    change = apply_event(
        before, envelope, definition, now_ms(), batch.offset, retention_ms(envelope.tenant)
    )
    if change is None:
        return False
    if isinstance(change, Replay):  # applied, and in RocksDB: its batch is read again
        metrics.replayed += 1
        if before is not None:  # the crash may have come before the invalidation
            note_change(batch, before.tenant, before.workflow)
        return False
    batch.send(status_name, key, record_change(batch, key, before, change), None)
    return True


def retention_ms(tenant: str) -> int | None:
    """How long ``tenant``'s finished items are kept (the policies remember their answers)."""
    return policy_for(tenant, "workflow").max_age_ms


def record_change(batch: Staging, key: bytes, before: Item | None, change: Change) -> bytes:
    """Stage every table row an applied change touches; the status record to send."""
    item = change.item
    status = codec.pack(change.status)
    note_change(batch, item.tenant, item.workflow)
    batch.write(workflow_items, key, item.to_bytes())
    batch.write(workflow_history, history_key(key, item.version), status)
    if before is None or (before.state, before.condition) != (item.state, item.condition):
        counts = batch.kept_row(
            workflow_counts, counts_key(item.tenant, item.workflow), Counts.from_bytes
        )
        counts.move(before, item)
    old_deadline = before.deadline if before is not None else None
    if old_deadline != item.deadline:
        if old_deadline is not None:
            batch.write(workflow_deadlines, deadline_key(old_deadline, key), None)
        if item.deadline is not None:
            batch.write(
                workflow_deadlines,
                deadline_key(item.deadline, key),
                codec.pack([item.state, False]),
            )
    schedule(key, before, item)
    return status


def native_core() -> Any | None:
    """The compiled core (``statekeeper-native``) when it is installed and enabled, else None.

    It takes the common case of :func:`handle_item_event` — a start, or a legal transition,
    of a record in place — and stages into the batch the very rows, counts, records, notes
    and metrics this module's Python path would; everything else it hands back untouched and
    the Python path handles it. It reads the registry's live map, so it sees redefinitions
    as the Python path does, and asks :func:`retention_ms` when an item finishes.
    """
    native = compiled_module()
    if native is None:
        logger.info(
            "workflow events: Python path only (%s)",
            "STATEKEEPER_NATIVE=false"
            if not app.settings.native
            else "statekeeper-native is not installed; `make deps` builds it where cargo is "
            "available",
        )
        return None
    logger.info("workflow events: compiled core (statekeeper-native), Python path for the rest")
    return native.WorkflowCore(
        registry.held,
        retention_ms,
        app.settings.partitions,
        app.settings.max_event_bytes,
        RECENT_IDS,
        (workflow_items, workflow_history, workflow_counts, workflow_deadlines, workflow_retention),
        status_name,
        NO_HEADERS,
        Counts.from_bytes,
        metrics,
        RECORD_OVERHEAD,
    )


core_failures = 0
"""Records the compiled core failed on (each then handled by the Python path)."""


def apply_compiled(
    batch: Staging, records: list[ConsumerRecord[bytes, bytes]], start: int, stop: int
) -> int:
    """Stage ``records[start:stop]`` through the compiled core, in one call: the index of
    the first record it did not stage (the Python path's, unless the batch is full).

    The core checks everything that can refuse before it stages anything, so a record it
    hands back, or fails on (an error, a panic: counted and logged here), is untouched in the
    batch and the Python path takes it. The exception is ``PartiallyStaged`` (a store failed
    half-way): the batch cannot be applied then, so it propagates and the runner stops the
    worker, which reads the batch again at restart. One clock reading serves the call (at
    most ``YIELD_EVERY`` records, well under a millisecond of work).
    """
    staged, failure = core.stage_many(  # type: ignore[union-attr]
        batch, records, start, stop, now_ms(), FLUSH_BYTES
    )
    if isinstance(failure, KeyboardInterrupt | SystemExit | asyncio.CancelledError):
        raise failure  # not the core's failure: stop as anywhere else
    if failure is not None:
        core_failed(failure)
    return staged  # type: ignore[no-any-return]


def core_failed(exc: BaseException) -> None:
    """Count a record the core failed on; log the first and every 10,000th."""
    global core_failures
    core_failures += 1
    if core_failures == 1 or core_failures % 10_000 == 0:
        logger.error(
            "compiled core failed (%d times so far); the Python path takes the record",
            core_failures, exc_info=exc,
        )  # fmt: skip


async def tick(partition: int, now: int) -> None:
    """Purge finished items past retention; emit ``workflow.stuck`` for passed SLAs."""
    await purge_due(partition, now)
    for entry in due(workflow_deadlines, partition, now):
        state, notified = codec.unpack(entry.value)
        if notified:
            continue
        stored = staged_items.get(entry.record_key)
        if stored is None:
            continue
        item = Item.from_bytes(stored)
        await emit(notices_name, entry.record_key, codec.pack(stuck_notice(item, now)))
        staged_deadlines[entry.index_key] = codec.pack([state, True])


def stuck_notice(item: Item, now: int) -> dict[str, Any]:
    return {
        "v": 1,
        "type": "workflow.stuck",
        "tenant": item.tenant,
        "key": item.key,
        "workflow": item.workflow,
        "state": item.state,
        "condition": item.condition,
        "version": item.version,
        "entered_at": item.entered_at,
        "deadline": item.deadline,
        "ts": now,
    }


core = native_core()
pipeline = EventPipeline(
    app, events_name, ITEM_TYPES, handle_item_event, fast=apply_compiled if core else None
)

runner = BatchedInput(
    "workflow",
    pipeline,
    workflow_items,
    tick=tick,
    tick_interval_s=app.settings.sla_check_interval_s,
    before_start=registry.caught_up.wait,
    after_write=invalidate_changed,
)
