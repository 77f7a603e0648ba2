"""Conversation memory: messages appended per user, forgotten on request, purged by retention.

Everything an event changes lives in the user's partition (key ``{tenant}/{user}``). A
message writes three rows (the message, its place in its conversation, its event id) and
the user record. ``conversation.forget`` deletes rows (changelog tombstones), deletes the
cached summaries built on them (``cache.delete_tagged``) and sends a
``conversation.forgotten`` receipt. Clock ticks on the conversation tick topic let the same
agent enforce retention (``STATEKEEPER_RETENTION``, kind ``conversation``) in-stream, with
``conversation.purged`` notices.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from faust import current_event
from faust.types import EventT

from statekeeper import codec
from statekeeper.agents.clock import PartitionClock, now_ms
from statekeeper.agents.pipeline import EventPipeline
from statekeeper.app import app
from statekeeper.stores.cache import cache
from statekeeper.stores.conversation import (
    Message,
    UserRecord,
    id_key,
    message_key,
    receipt_key,
    seq_of,
    turn_key,
    turns_prefix,
    user_prefix,
)
from statekeeper.stores.conversation_memory import (
    all_messages,
    conversation_deadlines,
    conversation_messages,
    conversation_users,
    read_message,
    search_indexes,
    token_counter,
)
from statekeeper.stores.deadlines import deadline_key, due
from statekeeper.stores.retention import policy_for
from statekeeper.stores.scan import scan_prefix
from statekeeper.stores.tick_journal import tombstone
from statekeeper.topics.conversation import (
    CONVERSATION_TYPES,
    MESSAGE,
    Removed,
    conversation_id,
    forgotten_notice,
    parse_message,
    purged_notice,
)
from statekeeper.topics.envelope import Envelope

logger = logging.getLogger(__name__)

RETENTION_BATCH = 200  # users purged per partition per tick, at most
notices_topic = app.topic(app.topic_names.lifecycle_notices)


def cache_tag(user: str) -> str:
    """The cache tag of everything cached from one user's memory (tenant-scoped by the cache)."""
    return f"conversation:{user}"


def _position() -> tuple[int, int]:
    event = current_event()
    assert event is not None, "conversation handlers run inside the stream"
    return event.message.partition, event.message.offset


async def handle_event(envelope: Envelope) -> bool:
    """Apply one conversation event; False when it is a redelivery with no effect."""
    if envelope.type == MESSAGE:
        return append(envelope)
    return await forget(envelope)


def append(envelope: Envelope) -> bool:
    """Append a message to the user's memory (idempotent by event id)."""
    rk = envelope.record_key
    _, offset = _position()
    seen = conversation_messages.get(id_key(rk, envelope.id))
    if seen is not None:
        if codec.unpack(seen) == offset:
            _rewrite(rk, offset)
        return False
    message = parse_message(envelope, offset, token_counter())
    raw = conversation_users.get(rk)
    record = UserRecord.from_bytes(raw) if raw is not None else UserRecord(created_seq=offset)
    conversation_messages[message_key(rk, offset)] = message.to_bytes()
    conversation_messages[turn_key(rk, message.conversation, offset)] = b""
    conversation_messages[id_key(rk, envelope.id)] = codec.pack(offset)
    record.add(message)
    _schedule(rk, record, envelope.tenant, now_ms())
    conversation_users[rk] = record.to_bytes()
    return True


def _rewrite(rk: bytes, seq: int) -> None:
    """A replayed record (same id and offset, after a crash): write its rows again.

    RocksDB is written at once but changelog records are acknowledged later, so the
    change may be local yet missing from the changelog; identical bytes are harmless.
    """
    raw = conversation_messages.get(message_key(rk, seq))
    if raw is None:
        return
    message = Message.from_bytes(raw)
    conversation_messages[message_key(rk, seq)] = raw
    conversation_messages[turn_key(rk, message.conversation, seq)] = b""
    conversation_messages[id_key(rk, message.event_id)] = codec.pack(seq)
    user = conversation_users.get(rk)
    if user is not None:
        conversation_users[rk] = user


def _schedule(rk: bytes, record: UserRecord, tenant: str, now: int) -> None:
    """Keep the user's one retention deadline entry where the policy puts it."""
    wanted = retention_deadline(record, tenant, now)
    if wanted == record.deadline:
        return
    if record.deadline is not None:
        del conversation_deadlines[deadline_key(record.deadline, rk)]
    if wanted is not None:
        conversation_deadlines[deadline_key(wanted, rk)] = b""
    record.deadline = wanted


def retention_deadline(record: UserRecord, tenant: str, now: int) -> int | None:
    """When the user's memory next breaks the retention policy (now, if it is too big)."""
    if record.messages == 0:
        return None
    if _over_size(record.messages, record.content_bytes, record.tokens, tenant):
        return now if record.deadline is None else min(now, record.deadline)
    max_age = policy_for(tenant, "conversation").max_age_ms
    if max_age is None or record.oldest_ts is None:
        return None
    return record.oldest_ts + max_age


def _over_size(messages: int, size: int, tokens: int, tenant: str) -> list[str]:
    policy = policy_for(tenant, "conversation")
    max_tokens = app.settings.conversation_max_tokens_per_user
    reasons = []
    if policy.max_items is not None and messages > policy.max_items:
        reasons.append("max_items")
    if policy.max_bytes is not None and size > policy.max_bytes:
        reasons.append("max_bytes")
    if max_tokens is not None and tokens > max_tokens:
        reasons.append("max_tokens")
    return reasons


def _delete_message(rk: bytes, message: Message) -> list[bytes]:
    """Delete a message's rows; returns their keys."""
    keys = [message_key(rk, message.seq), turn_key(rk, message.conversation, message.seq)]
    if conversation_messages.get(id_key(rk, message.event_id)) is not None:
        keys.append(id_key(rk, message.event_id))
    for key in keys:
        del conversation_messages[key]
    return keys


async def forget(envelope: Envelope) -> bool:
    """Erase one conversation, or all the user has; send the receipt (idempotent by id)."""
    rk = envelope.record_key
    partition, offset = _position()
    receipt = conversation_messages.get(receipt_key(rk, envelope.id))
    if receipt is not None:
        stored_offset, notice, *journal = codec.unpack(receipt)
        if stored_offset == offset:  # replayed after a crash: receipt and tombstones may be unsent
            scope = conversation_id(envelope.data.get("conversation"), required=False)
            await _forget_again(envelope, partition, offset, scope, journal[0] if journal else [])
            await notices_topic.send(key=rk, value=codec.pack(notice))
        return False
    conversation = conversation_id(envelope.data.get("conversation"), required=False)
    raw = conversation_users.get(rk)
    record = UserRecord.from_bytes(raw) if raw is not None else None
    doomed = list(_doomed(partition, rk, conversation))
    deleted: list[bytes] = []
    for message in doomed:
        deleted += _delete_message(rk, message)
        if record is not None:
            record.remove(message)
    if conversation is None:
        deleted += _delete_leftovers(partition, rk)
    conversations = len({m.conversation for m in doomed})
    await _settle(rk, record, envelope.tenant)
    cached = await cache.delete_tagged(envelope.tenant, [cache_tag(envelope.key)])
    removed = Removed(len(doomed), sum(m.tokens for m in doomed), conversations, cached)
    notice = forgotten_notice(envelope, conversation, removed, now_ms())
    # The deleted keys go in the receipt: a replay after a crash must send their changelog
    # tombstones again even though the rows are already gone from RocksDB.
    conversation_messages[receipt_key(rk, envelope.id)] = codec.pack([offset, notice, deleted])
    await notices_topic.send(key=rk, value=codec.pack(notice))
    logger.info("forgot %s of %r: %s", conversation or "everything", rk, removed)
    return True


def _doomed(partition: int, rk: bytes, conversation: str | None) -> Iterable[Message]:
    if conversation is None:
        return list(all_messages(partition, rk))
    seqs = [
        seq_of(k)
        for k, _ in scan_prefix(conversation_messages, partition, turns_prefix(rk, conversation))
    ]
    return [m for m in (read_message(partition, rk, s) for s in seqs) if m is not None]


def _delete_leftovers(partition: int, rk: bytes) -> list[bytes]:
    """Rows of the user a full forget must not leave behind (receipts stay: no content)."""
    marker = len(user_prefix(rk))
    keys = [
        key
        for key, _ in scan_prefix(conversation_messages, partition, user_prefix(rk))
        if key[marker : marker + 1] != b"F"
    ]
    for key in keys:
        del conversation_messages[key]
    return keys


async def _forget_again(
    envelope: Envelope, partition: int, offset: int, scope: str | None, deleted: list[bytes]
) -> None:
    """Redo a forget replayed after a crash, against what the replay has rebuilt since.

    The records before the forget were replayed too, and a redelivered message whose id
    the forget had erased was appended again, under its own (earlier) offset. A message's
    sequence is the offset that wrote it, so every message in scope below the forget's
    offset is one the forget erased: it is deleted again; later ones stand. The keys the
    first pass deleted get their tombstones again (they may never have reached the
    changelog), and the user record is written as it now stands.
    """
    rk = envelope.record_key
    raw = conversation_users.get(rk)
    record = UserRecord.from_bytes(raw) if raw is not None else None
    for message in _doomed(partition, rk, scope):
        if message.seq < offset:
            _delete_message(rk, message)
            if record is not None:
                record.remove(message)
    for key in deleted:
        tombstone(conversation_messages, key)
    if record is None:
        tombstone(conversation_users, rk)
    await _settle(rk, record, envelope.tenant)


async def _settle(rk: bytes, record: UserRecord | None, tenant: str) -> None:
    """After removals: delete the user record if empty, else bump its version and reschedule."""
    search_indexes.drop(rk)
    if record is None:
        return
    if record.messages <= 0:
        if record.deadline is not None:
            del conversation_deadlines[deadline_key(record.deadline, rk)]
        del conversation_users[rk]
        return
    record.removals += 1
    _schedule(rk, record, tenant, now_ms())
    conversation_users[rk] = record.to_bytes()


async def handle_tick(event: EventT) -> None:
    """Purge what retention no longer allows, for every user whose deadline has come."""
    partition = event.message.partition
    now = now_ms()
    for entry in due(conversation_deadlines, partition, now, limit=RETENTION_BATCH):
        del conversation_deadlines[entry.index_key]
        raw = conversation_users.get(entry.record_key)
        if raw is None:
            continue
        record = UserRecord.from_bytes(raw)
        if record.deadline == entry.deadline:
            record.deadline = None
        await purge(partition, entry.record_key, record, now)


async def purge(partition: int, rk: bytes, record: UserRecord, now: int) -> None:
    """Remove the oldest messages over the size limits and those older than the max age."""
    tenant, _, user = rk.decode().partition("/")
    max_age = policy_for(tenant, "conversation").max_age_ms
    cutoff = now - max_age if max_age is not None else None
    totals = [record.messages, record.content_bytes, record.tokens]
    reasons: set[str] = set()
    removed: list[Message] = []
    oldest: int | None = None
    for message in list(all_messages(partition, rk)):
        over = _over_size(totals[0], totals[1], totals[2], tenant)
        if over or (cutoff is not None and message.ts < cutoff):
            reasons.update(over or ["max_age"])
            removed.append(message)
            _delete_message(rk, message)
            record.remove(message)
            totals = [totals[0] - 1, totals[1] - message.size, totals[2] - message.tokens]
        else:
            oldest = message.ts if oldest is None else min(oldest, message.ts)
    record.oldest_ts = oldest
    if not removed:
        _schedule(rk, record, tenant, now)
        conversation_users[rk] = record.to_bytes()
        return
    await _settle(rk, record, tenant)
    cached = await cache.delete_tagged(tenant, [cache_tag(user)])
    conversations = len({m.conversation for m in removed})
    summary = Removed(len(removed), sum(m.tokens for m in removed), conversations, cached)
    notice = purged_notice(tenant, user, sorted(reasons), summary, now)
    await notices_topic.send(key=rk, value=codec.pack(notice))
    logger.info("purged %d messages of %r (%s)", len(removed), rk, ", ".join(sorted(reasons)))


pipeline = EventPipeline(app, app.topic_names.conversation_events, CONVERSATION_TYPES, handle_event)
clock = PartitionClock(
    "conversation", conversation_users, app.settings.conversation_check_interval_s
)


@app.agent(app.topic(app.topic_names.conversation_events, clock.name))
async def conversation_events(stream):  # type: ignore[no-untyped-def]
    """Apply conversation events in per-user order; enforce retention on each tick."""
    async for event in stream.events():
        if clock.is_tick(event):
            await handle_tick(event)
        else:
            await pipeline.process(event)
