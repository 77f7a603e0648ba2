"""Lifecycle management: resources registered, touched, released and expired.

Every change lands in the resource's partition: the resource row, its entry in the
deadline index, the partition's accounting per tenant and kind, and, once it ends, its
receipt. Resource events take the batched path (:mod:`statekeeper.agents.batched`): a
partition's records are applied in order and its writes land together, after Kafka has
acknowledged them and the notices they send. Between batches the same runner works off
each owned partition's deadline index up to now (at most ``STATEKEEPER_LIFECYCLE_BATCH``
entries per partition and round, so a wave of expiries interleaves with events): what is
due expires, receipts whose time is up are forgotten. An event that finds its resource
past a deadline expires it first: expiry follows the deadline, not the round that happens
to notice it.

Crash safety (README, "Lifecycle"): a batch's notices, changelog records and accounting
travel in one produce request and reach RocksDB only once acknowledged. A crash before
that finds the resources as they were and ends them again — the same notice, byte for
byte (it holds only stored values) — and a crash after finds them ended, the receipt
naming the record that ended them: nothing is sent again.
"""

from __future__ import annotations

import logging

from statekeeper import codec
from statekeeper.agents.batched import BatchedInput
from statekeeper.agents.clock import now_ms
from statekeeper.agents.pipeline import EventPipeline
from statekeeper.app import app
from statekeeper.metrics import metrics
from statekeeper.stores.deadlines import DueEntry, deadline_key, due
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
from statekeeper.stores.staged import StagedTable, emit, in_hand
from statekeeper.stores.tables import (
    lifecycle_deadlines,
    lifecycle_ended,
    lifecycle_resources,
    lifecycle_stats,
)
from statekeeper.topics.envelope import Envelope
from statekeeper.topics.lifecycle import RESOURCE_TYPES

logger = logging.getLogger(__name__)

EXPIRE, FORGET = "expire", "forget"  # what a deadline index entry is for

events_name = app.topic_names.lifecycle_events
notices_name = app.topic_names.lifecycle_notices

resources = StagedTable(lifecycle_resources)
receipts = StagedTable(lifecycle_ended)
index = StagedTable(lifecycle_deadlines)
accounts = StagedTable(lifecycle_stats)


def load_resource(key: bytes) -> Resource | None:
    stored = resources.get(key)
    return Resource.from_bytes(stored) if stored is not None else None


def load_ended(key: bytes) -> Ended | None:
    stored = receipts.get(key)
    return Ended.from_bytes(stored) if stored is not None else None


def keep_receipt_ms(tenant: str) -> int | None:
    """How long an ended resource's receipt is kept: the ``resource`` retention policy."""
    return policy_for(tenant, "resource").max_age_ms


async def handle_resource_event(envelope: Envelope) -> bool:
    """Apply one resource event; False when it is a redelivery with no effect."""
    key = envelope.record_key
    offset = in_hand("a resource event").offset
    now = now_ms()
    resource, ended = load_resource(key), load_ended(key)
    if resource is not None and resource.is_due(now):
        ending = expire(resource, now, (EVENT, offset), keep_receipt_ms(resource.tenant))
        assert ending is not None
        await finish(key, ending)
        resource, ended = None, ending.ended
    outcome = apply_event(resource, ended, envelope, now, offset, keep_receipt_ms(envelope.tenant))
    if outcome is None:
        return False
    if isinstance(outcome, Replay):  # applied, and RocksDB has it: read again after a crash
        metrics.replayed += 1
        return False
    if isinstance(outcome, Ending):
        await finish(key, outcome)
    else:
        save(key, resource, outcome)
    return True


def save(key: bytes, before: Resource | None, after: Resource) -> None:
    """Write a registered or touched resource, its deadline entry and the accounting."""
    resources[key] = after.to_bytes()
    old, new = (before.deadline() if before else None), after.deadline()
    if old != new:
        if old is not None:
            del index[deadline_key(old[0], key)]
        if new is not None:
            index[deadline_key(new[0], key)] = codec.pack([EXPIRE, new[1]])
    if before is None:
        counter = stats_key(after.tenant, after.kind)
        stats = Stats.from_bytes(accounts.get(counter))
        stats.registered(after)
        accounts[counter] = stats.to_bytes()
        metrics.resources_registered += 1


async def finish(key: bytes, ending: Ending) -> None:
    """End a resource: its notice, receipt, accounting and tombstones, in one batch."""
    resource, ended = ending.resource, ending.ended
    await emit(notices_name, key, ended.notice)
    previous = load_ended(key)
    if previous is not None and previous.forget_at is not None:
        del index[deadline_key(previous.forget_at, key)]
    deadline = resource.deadline()
    if deadline is not None:
        del index[deadline_key(deadline[0], key)]
    del resources[key]
    receipts[key] = ended.to_bytes()
    if ended.forget_at is not None:
        index[deadline_key(ended.forget_at, key)] = codec.pack([FORGET])
    counter = stats_key(resource.tenant, resource.kind)
    stats = Stats.from_bytes(accounts.get(counter))
    stats.ended(ended)
    accounts[counter] = stats.to_bytes()
    metrics.resources_ended[ended.reason] += 1


async def tick(partition: int, now: int) -> None:
    """Expire what is due in this partition and forget receipts whose time is up."""
    batch = in_hand()
    for entry in due(lifecycle_deadlines, partition, now, limit=app.settings.lifecycle_batch):
        if batch.full():
            return  # the rest next round: one flush stays one produce request
        if codec.unpack(entry.value)[0] == FORGET:
            forget(entry)
        else:
            await _expire(entry, now, batch.offset)


async def _expire(entry: DueEntry, now: int, offset: int) -> None:
    resource = load_resource(entry.record_key)
    deadline = resource.deadline() if resource is not None else None
    if resource is None or deadline is None or deadline[0] != entry.deadline:
        del index[entry.index_key]  # stale: the resource moved on or is gone
        return
    ending = expire(resource, now, (TICK, offset), keep_receipt_ms(resource.tenant))
    assert ending is not None  # due by the index, which holds its earliest deadline
    await finish(entry.record_key, ending)


def forget(entry: DueEntry) -> None:
    """Drop an ended resource's receipt once its retention has passed."""
    ended = load_ended(entry.record_key)
    if ended is not None and ended.forget_at == entry.deadline:
        del receipts[entry.record_key]
    del index[entry.index_key]


pipeline = EventPipeline(app, events_name, RESOURCE_TYPES, handle_resource_event)

runner = BatchedInput(
    "lifecycle",
    pipeline,
    lifecycle_resources,
    tick=tick,
    tick_interval_s=app.settings.lifecycle_check_interval_s,
)
