"""Lifecycle management: resources registered, touched, released and expired in-stream.

Every change lands in the resource's partition: the resource row, its entry in the
deadline index, the partition's accounting per tenant and kind, and, once it ends, its
receipt. Clock ticks on an internal topic co-partitioned with the events let the same
agent expire what is due (at most ``STATEKEEPER_LIFECYCLE_BATCH`` per partition and tick,
so a wave of expiries interleaves with events) and forget receipts whose time is up.
An event that finds its resource past a deadline expires it first: expiry follows the
deadline, not the tick that happens to notice it.

Crash safety (README, "Lifecycle"): a notice is sent before the rows it ends are deleted,
and a record processed again after a crash re-sends the stored notice bytes and rewrites
the rows and tombstones: from the receipt's ``source`` for events, from the tick journal
(:mod:`statekeeper.stores.tick_journal`) for ticks.
"""

from __future__ import annotations

import logging

from faust import current_event
from faust.types import EventT

from statekeeper import codec
from statekeeper.agents.clock import PartitionClock, now_ms
from statekeeper.agents.pipeline import EventPipeline
from statekeeper.app import app
from statekeeper.metrics import metrics
from statekeeper.stores import tick_journal
from statekeeper.stores.deadlines import deadline_key, due
from statekeeper.stores.lifecycle import (
    EVENT,
    TICK,
    Ended,
    Ending,
    Replay,
    Resource,
    Stats,
    apply_event,
    expire,
    stats_key,
)
from statekeeper.stores.retention import policy_for
from statekeeper.stores.tables import (
    lifecycle_deadlines,
    lifecycle_ended,
    lifecycle_resources,
    lifecycle_stats,
)
from statekeeper.stores.tick_journal import tombstone
from statekeeper.topics.envelope import Envelope
from statekeeper.topics.lifecycle import RESOURCE_TYPES

logger = logging.getLogger(__name__)

EXPIRE, FORGET = "expire", "forget"  # what a deadline index entry is for

events_name = app.topic_names.lifecycle_events
notices_topic = app.topic(app.topic_names.lifecycle_notices)


def load_resource(key: bytes) -> Resource | None:
    stored = lifecycle_resources.get(key)
    return Resource.from_bytes(stored) if stored is not None else None


def load_ended(key: bytes) -> Ended | None:
    stored = lifecycle_ended.get(key)
    return Ended.from_bytes(stored) if stored is not None else None


def keep_receipt_ms(tenant: str) -> int | None:
    """How long an ended resource's receipt is kept: the ``resource`` retention policy."""
    return policy_for(tenant, "resource").max_age_ms


async def handle_resource_event(envelope: Envelope) -> bool:
    """Apply one resource event; False when it is a redelivery with no effect."""
    key = envelope.record_key
    event = current_event()
    offset = event.message.offset if event is not None else -1
    now = now_ms()
    resource, ended = load_resource(key), load_ended(key)
    if ended is not None and ended.source == (EVENT, offset):
        await replay_end(key, ended)  # this record ended the resource before a crash
    if resource is not None and resource.is_due(now):
        ending = expire(resource, now, (EVENT, offset), keep_receipt_ms(resource.tenant))
        assert ending is not None
        await finish(key, ending)
        resource, ended = None, ending.ended
    outcome = apply_event(resource, ended, envelope, now, offset, keep_receipt_ms(envelope.tenant))
    if outcome is None:
        return False
    if isinstance(outcome, Replay):
        if resource is not None:
            rewrite_live(key, resource)
        metrics.replayed += 1
        return False
    if isinstance(outcome, Ending):
        await finish(key, outcome)
    else:
        save(key, resource, outcome)
    return True


def save(key: bytes, before: Resource | None, after: Resource) -> None:
    """Write a registered or touched resource, its deadline entry and the accounting."""
    lifecycle_resources[key] = after.to_bytes()
    old, new = (before.deadline() if before else None), after.deadline()
    if old != new:
        if old is not None:
            tombstone(lifecycle_deadlines, deadline_key(old[0], key))
        if new is not None:
            lifecycle_deadlines[deadline_key(new[0], key)] = codec.pack([EXPIRE, new[1]])
    if before is None:
        counter = stats_key(after.tenant, after.kind)
        stats = Stats.from_bytes(lifecycle_stats.get(counter))
        stats.registered(after)
        lifecycle_stats[counter] = stats.to_bytes()
        metrics.resources_registered += 1


def rewrite_live(key: bytes, resource: Resource) -> None:
    """Write a live resource's rows again (same bytes) after a crash replay."""
    lifecycle_resources[key] = resource.to_bytes()
    deadline = resource.deadline()
    if deadline is not None:
        lifecycle_deadlines[deadline_key(deadline[0], key)] = codec.pack([EXPIRE, deadline[1]])
    counter = stats_key(resource.tenant, resource.kind)
    current = lifecycle_stats.get(counter)
    if current is not None:
        lifecycle_stats[counter] = current


async def finish(key: bytes, ending: Ending) -> None:
    """End a resource: notice first, then receipt, accounting and tombstones."""
    resource, ended = ending.resource, ending.ended
    await notices_topic.send(key=key, value=ended.notice)
    previous = load_ended(key)
    if previous is not None and previous.forget_at is not None:
        tombstone(lifecycle_deadlines, deadline_key(previous.forget_at, key))
    deadline = resource.deadline()
    if deadline is not None:
        tombstone(lifecycle_deadlines, deadline_key(deadline[0], key))
    tombstone(lifecycle_resources, key)
    lifecycle_ended[key] = ended.to_bytes()
    if ended.forget_at is not None:
        lifecycle_deadlines[deadline_key(ended.forget_at, key)] = codec.pack([FORGET])
    counter = stats_key(resource.tenant, resource.kind)
    stats = Stats.from_bytes(lifecycle_stats.get(counter))
    stats.ended(ended)
    lifecycle_stats[counter] = stats.to_bytes()
    metrics.resources_ended[ended.reason] += 1


async def replay_end(key: bytes, ended: Ended, *, send: bool = True) -> None:
    """Send an ending's notice again and rewrite what it wrote (identical bytes).

    The resource row is tombstoned again only while no newer registration holds the key.
    """
    if send:
        await notices_topic.send(key=key, value=ended.notice)
    if lifecycle_resources.get(key) is None:
        tombstone(lifecycle_resources, key)
    if ended.reason != "released":
        tombstone(lifecycle_deadlines, deadline_key(ended.ended_at, key))
    lifecycle_ended[key] = ended.to_bytes()
    if ended.forget_at is not None:
        lifecycle_deadlines[deadline_key(ended.forget_at, key)] = codec.pack([FORGET])
    counter = stats_key(ended.tenant, ended.kind)
    current = lifecycle_stats.get(counter)
    if current is not None:
        lifecycle_stats[counter] = current
    metrics.replayed += 1
    logger.info("replayed the end of %r (%s) after a restart", key, ended.reason)


async def handle_tick(event: EventT) -> None:
    """Replay a journaled tick, then expire what is due and forget old receipts."""
    partition, offset = event.message.partition, event.message.offset
    journaled = tick_journal.recorded(lifecycle_deadlines, partition, offset) or []
    for key, notice in journaled:  # the same tick again: a crash came before its commit
        await notices_topic.send(key=key, value=notice)
        ended = load_ended(key)
        if ended is not None and ended.source == (TICK, offset):
            await replay_end(key, ended, send=False)
    now = now_ms()
    endings: list[tuple[bytes, Ending]] = []
    batch = app.settings.lifecycle_batch
    for entry in due(lifecycle_deadlines, partition, now, limit=batch):
        purpose = codec.unpack(entry.value)[0]
        if purpose == FORGET:
            forget(entry.record_key, entry.deadline, entry.index_key)
            continue
        resource = load_resource(entry.record_key)
        deadline = resource.deadline() if resource is not None else None
        if resource is None or deadline is None or deadline[0] != entry.deadline:
            tombstone(lifecycle_deadlines, entry.index_key)  # stale entry
            continue
        ending = expire(resource, now, (TICK, offset), keep_receipt_ms(resource.tenant))
        if ending is not None:
            endings.append((entry.record_key, ending))
    if not endings:
        return
    # Journal first: a crash in the middle of the batch leaves some resources ended in
    # RocksDB with their notices unsent, and only the journal can name them afterwards.
    seen = {key for key, _ in journaled}
    fresh = [(key, ending.notice) for key, ending in endings if key not in seen]
    tick_journal.record(lifecycle_deadlines, partition, offset, journaled + fresh)
    for key, ending in endings:
        await finish(key, ending)


def forget(key: bytes, deadline: int, index_key: bytes) -> None:
    """Drop an ended resource's receipt once its retention has passed."""
    ended = load_ended(key)
    if ended is not None and ended.forget_at == deadline:
        tombstone(lifecycle_ended, key)
    tombstone(lifecycle_deadlines, index_key)


pipeline = EventPipeline(app, events_name, RESOURCE_TYPES, handle_resource_event)

clock = PartitionClock("resource", lifecycle_resources, app.settings.lifecycle_check_interval_s)


@app.agent(app.topic(events_name, clock.name))
async def lifecycle_events(stream):  # type: ignore[no-untyped-def]
    """Apply resource events in per-resource order; expire what is due on each tick."""
    async for event in stream.events():
        if clock.is_tick(event):
            try:
                await handle_tick(event)
            except Exception:  # a bug must not stop the stream; the next tick retries
                logger.exception("lifecycle tick failed on partition %d", event.message.partition)
        else:
            await pipeline.process(event)
