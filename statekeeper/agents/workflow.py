"""State management: item events applied to the workflow tables, one status record each.

For every applied change, in the item's partition: the item is rewritten, one history
entry is added, the partition's counts move, the SLA deadline index follows the item, and
one record goes to ``statekeeper.workflow.status``. Clock ticks on an internal topic,
co-partitioned with the events, let the same agent emit ``workflow.stuck`` notices (faust
timers cannot write tables; the agent can).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from faust import current_event
from faust.types import EventT

from statekeeper import codec
from statekeeper.agents.clock import PartitionClock, now_ms
from statekeeper.agents.definitions import lookup, registry
from statekeeper.agents.pipeline import EventPipeline
from statekeeper.agents.workflow_purge import purge_due, schedule
from statekeeper.app import app
from statekeeper.metrics import metrics
from statekeeper.stores.deadlines import deadline_key, due
from statekeeper.stores.definitions import WorkflowDefinition
from statekeeper.stores.retention import policy_for
from statekeeper.stores.tables import (
    workflow_counts,
    workflow_deadlines,
    workflow_history,
    workflow_items,
)
from statekeeper.stores.workflow import (
    ITEM_TYPES,
    Change,
    Counts,
    Item,
    Replay,
    apply_event,
    counts_key,
    history_key,
    purge_deadline,
    sla_deadline,
)
from statekeeper.topics.envelope import Envelope

logger = logging.getLogger(__name__)

events_name = app.topic_names.workflow_events
status_topic = app.topic(app.topic_names.workflow_status)
notices_topic = app.topic(app.topic_names.lifecycle_notices)


async def handle_item_event(envelope: Envelope) -> bool:
    """Apply one item event; False when it is a redelivery with no effect."""
    key = envelope.record_key
    stored = workflow_items.get(key)
    before = Item.from_bytes(stored) if stored is not None else None
    workflow = before.workflow if before is not None else envelope.data.get("workflow")
    definition = await lookup(envelope.tenant, workflow) if isinstance(workflow, str) else None
    event = current_event()
    offset = event.message.offset if event is not None else -1
    change = apply_event(before, envelope, definition, now_ms(), offset)
    if change is None:
        return False
    if isinstance(change, Replay):
        assert before is not None
        await replay_change(key, before, change.version)
        return False
    await record_change(key, before, change, definition)
    return True


async def replay_change(key: bytes, item: Item, version: int) -> None:
    """Write again what a change wrote, after a crash may have lost part of it.

    RocksDB is written at once but its changelog records and the status record are
    acknowledged later, so a record replayed after a crash finds its change applied
    locally yet perhaps missing downstream. Rewriting the same bytes is idempotent; the
    status record may therefore appear twice (same key and version), never not at all.
    """
    history_entry = workflow_history.get(history_key(key, version))
    if history_entry is None:
        return
    workflow_items[key] = item.to_bytes()
    workflow_history[history_key(key, version)] = history_entry
    counter_key = counts_key(item.tenant, item.workflow)
    current_counts = workflow_counts.get(counter_key)
    if current_counts is not None:
        workflow_counts[counter_key] = current_counts
    if item.deadline is not None:
        entry = deadline_key(item.deadline, key)
        current_deadline = workflow_deadlines.get(entry)
        if current_deadline is not None:
            workflow_deadlines[entry] = current_deadline
    schedule(key, None, item)
    metrics.replayed += 1
    logger.info("replayed %r version %d after a restart", key, version)
    await status_topic.send(key=key, value=history_entry)


async def record_change(
    key: bytes, before: Item | None, change: Change, definition: WorkflowDefinition | None
) -> None:
    """Write every table an applied change touches, then emit its status record."""
    item = dataclasses.replace(change.item, deadline=sla_deadline(change.item, definition))
    retention = policy_for(item.tenant, "workflow").max_age_ms
    item = dataclasses.replace(item, purge_at=purge_deadline(before, item, retention))
    workflow_items[key] = item.to_bytes()
    workflow_history[history_key(key, item.version)] = codec.pack(change.status)
    if before is None or (before.state, before.condition) != (item.state, item.condition):
        counter_key = counts_key(item.tenant, item.workflow)
        counts = Counts.from_bytes(workflow_counts.get(counter_key))
        counts.move(before, item)
        workflow_counts[counter_key] = counts.to_bytes()
    old_deadline = before.deadline if before is not None else None
    if old_deadline != item.deadline:
        if old_deadline is not None:
            del workflow_deadlines[deadline_key(old_deadline, key)]
        if item.deadline is not None:
            workflow_deadlines[deadline_key(item.deadline, key)] = codec.pack([item.state, False])
    schedule(key, before, item)
    await status_topic.send(key=key, value=codec.pack(change.status))


async def handle_tick(event: EventT) -> None:
    """Emit ``workflow.stuck`` notices for passed SLAs; purge finished items past retention."""
    now = now_ms()
    await purge_due(event, now)
    for entry in due(workflow_deadlines, event.message.partition, now):
        state, notified = codec.unpack(entry.value)
        if notified:
            continue
        stored = workflow_items.get(entry.record_key)
        if stored is None:
            continue
        item = Item.from_bytes(stored)
        await notices_topic.send(key=entry.record_key, value=codec.pack(stuck_notice(item, now)))
        workflow_deadlines[entry.index_key] = codec.pack([state, True])


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


pipeline = EventPipeline(app, events_name, ITEM_TYPES, handle_item_event)


clock = PartitionClock("workflow", workflow_items, app.settings.sla_check_interval_s)


@app.agent(app.topic(events_name, clock.name))
async def workflow_events(stream):  # type: ignore[no-untyped-def]
    """Apply item lifecycle commands in per-item order; check SLAs on each tick."""
    await registry.caught_up.wait()
    async for event in stream.events():
        if clock.is_tick(event):
            await handle_tick(event)
        else:
            await pipeline.process(event)
