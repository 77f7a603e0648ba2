"""Conversation memory: messages appended per user, forgotten on request, purged by retention.

Everything an event changes lives in the user's partition (key ``{tenant}/{user}``). A
message writes three rows (the message, its place in its conversation, its event id) and
the user record. ``conversation.forget`` deletes rows (changelog tombstones), deletes the
cached summaries built on them (``cache.delete_tagged``) and sends a
``conversation.forgotten`` receipt. Conversation events take the batched path
(:mod:`statekeeper.agents.batched`): a partition's records are applied in order and its
writes land together, after Kafka has acknowledged them and the notices they send; between
batches the same runner enforces retention (``STATEKEEPER_RETENTION``, kind
``conversation``), with ``conversation.purged`` notices.

Cached summaries are deleted twice: while the forget or purge is handled (the receipt says
how many there were) and again once the batch is in RocksDB, so a summary computed from the
old rows in between is not left behind.
"""

from __future__ import annotations

import logging

from statekeeper import codec
from statekeeper.agents.batched import BatchedInput
from statekeeper.agents.clock import now_ms
from statekeeper.agents.pipeline import EventPipeline
from statekeeper.app import app
from statekeeper.metrics import metrics
from statekeeper.stores.cache import cache
from statekeeper.stores.conversation import (
    Message,
    UserRecord,
    id_key,
    message_key,
    messages_prefix,
    receipt_key,
    seq_of,
    turn_key,
    turns_prefix,
    user_prefix,
)
from statekeeper.stores.conversation_memory import (
    conversation_deadlines,
    conversation_messages,
    conversation_users,
    search_indexes,
    token_counter,
)
from statekeeper.stores.deadlines import deadline_key, due
from statekeeper.stores.retention import policy_for
from statekeeper.stores.scan import scan_prefix_staged
from statekeeper.stores.staged import StagedTable, emit, in_hand
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

RETENTION_BATCH = 200  # users purged per partition per round, at most
notices_name = app.topic_names.lifecycle_notices

messages = StagedTable(conversation_messages)
users = StagedTable(conversation_users)
index = StagedTable(conversation_deadlines)


def cache_tag(user: str) -> str:
    """The cache tag of everything cached from one user's memory (tenant-scoped by the cache)."""
    return f"conversation:{user}"


def _position() -> tuple[int, int]:
    batch = in_hand("a conversation event")
    return batch.partition, batch.offset


async def _uncache(tenant: str, user: str) -> int:
    """Delete the user's cached summaries now and after the batch; how many there were."""
    tag = cache_tag(user)
    in_hand("a conversation event").notes.add((tenant, tag))  # deleted again once applied
    return await cache.delete_tagged(tenant, [tag])


async def handle_event(envelope: Envelope) -> bool:
    """Apply one conversation event; False when it is a redelivery with no effect."""
    if envelope.type == MESSAGE:
        return append(envelope)
    return await forget(envelope)


def append(envelope: Envelope) -> bool:
    """Append a message to the user's memory (idempotent by event id)."""
    rk = envelope.record_key
    _, offset = _position()
    seen = messages.get(id_key(rk, envelope.id))
    if seen is not None:
        if codec.unpack(seen) == offset:  # this record, applied before a crash
            metrics.replayed += 1
        return False
    message = parse_message(envelope, offset, token_counter())
    raw = users.get(rk)
    record = UserRecord.from_bytes(raw) if raw is not None else UserRecord(created_seq=offset)
    messages[message_key(rk, offset)] = message.to_bytes()
    messages[turn_key(rk, message.conversation, offset)] = b""
    messages[id_key(rk, envelope.id)] = codec.pack(offset)
    record.add(message)
    _schedule(rk, record, envelope.tenant, now_ms())
    users[rk] = record.to_bytes()
    return True


def _schedule(rk: bytes, record: UserRecord, tenant: str, now: int) -> None:
    """Keep the user's one retention deadline entry where the policy puts it."""
    wanted = retention_deadline(record, tenant, now)
    if wanted == record.deadline:
        return
    if record.deadline is not None:
        del index[deadline_key(record.deadline, rk)]
    if wanted is not None:
        index[deadline_key(wanted, rk)] = b""
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
    if messages.get(id_key(rk, message.event_id)) is not None:
        keys.append(id_key(rk, message.event_id))
    for key in keys:
        del messages[key]
    return keys


async def forget(envelope: Envelope) -> bool:
    """Erase one conversation, or all the user has; send the receipt (idempotent by id)."""
    rk = envelope.record_key
    partition, offset = _position()
    conversation = conversation_id(envelope.data.get("conversation"), required=False)
    receipt = messages.get(receipt_key(rk, envelope.id))
    if receipt is not None:
        if codec.unpack(receipt)[0] == offset:  # this record, applied before a crash
            await _forget_again(envelope, partition, offset, conversation)
            metrics.replayed += 1
        return False
    raw = users.get(rk)
    record = UserRecord.from_bytes(raw) if raw is not None else None
    doomed = _doomed(partition, rk, conversation)
    for message in doomed:
        _delete_message(rk, message)
        if record is not None:
            record.remove(message)
    if conversation is None:
        _delete_leftovers(partition, rk)
    conversations = len({m.conversation for m in doomed})
    _settle(rk, record, envelope.tenant)
    cached = await _uncache(envelope.tenant, envelope.key)
    removed = Removed(len(doomed), sum(m.tokens for m in doomed), conversations, cached)
    notice = forgotten_notice(envelope, conversation, removed, in_hand().event_time(now_ms()))
    messages[receipt_key(rk, envelope.id)] = codec.pack([offset, notice])
    await emit(notices_name, rk, codec.pack(notice))
    logger.info("forgot %s of %r: %s", conversation or "everything", rk, removed)
    return True


def _doomed(partition: int, rk: bytes, conversation: str | None) -> list[Message]:
    if conversation is None:
        return _messages_of(partition, rk)
    turns = scan_prefix_staged(conversation_messages, partition, turns_prefix(rk, conversation))
    found = (messages.get(message_key(rk, seq_of(key))) for key, _ in turns)
    return [Message.from_bytes(raw) for raw in found if raw is not None]


def _messages_of(partition: int, rk: bytes) -> list[Message]:
    """The user's messages in order, as the batch in hand sees them."""
    rows = scan_prefix_staged(conversation_messages, partition, messages_prefix(rk))
    return [Message.from_bytes(raw) for _, raw in rows]


def _delete_leftovers(partition: int, rk: bytes) -> None:
    """Rows of the user a full forget must not leave behind (receipts stay: no content)."""
    marker = len(user_prefix(rk))
    for key, _ in scan_prefix_staged(conversation_messages, partition, user_prefix(rk)):
        if key[marker : marker + 1] != b"F":
            del messages[key]


async def _forget_again(envelope: Envelope, partition: int, offset: int, scope: str | None) -> None:
    """Redo a forget read again after a crash, against what the batch has appended since.

    The forget's batch reached the changelogs, and so RocksDB, before the crash; its
    offset did not get committed, so the batch is read again. A message before the forget
    in that batch whose id the forget had erased is appended again, under its own
    (earlier) offset. A message's sequence is the offset that wrote it, so every message
    in scope below the forget's offset is one the forget erased: it is deleted again;
    later ones stand. The receipt went out with the first pass and is not sent again.
    """
    rk = envelope.record_key
    raw = users.get(rk)
    record = UserRecord.from_bytes(raw) if raw is not None else None
    again = [m for m in _doomed(partition, rk, scope) if m.seq < offset]
    for message in again:
        _delete_message(rk, message)
        if record is not None:
            record.remove(message)
    if again:
        _settle(rk, record, envelope.tenant)


def _settle(rk: bytes, record: UserRecord | None, tenant: str) -> None:
    """After removals: delete the user record if empty, else bump its version and reschedule."""
    search_indexes.drop(rk)
    if record is None:
        return
    if record.messages <= 0:
        if record.deadline is not None:
            del index[deadline_key(record.deadline, rk)]
        del users[rk]
        return
    record.removals += 1
    _schedule(rk, record, tenant, now_ms())
    users[rk] = record.to_bytes()


async def tick(partition: int, now: int) -> None:
    """Purge what retention no longer allows, for every user whose deadline has come."""
    batch = in_hand()
    for entry in due(conversation_deadlines, partition, now, limit=RETENTION_BATCH):
        if batch.full():
            return  # the rest next round: one flush stays one produce request
        del index[entry.index_key]
        raw = users.get(entry.record_key)
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
    for message in _messages_of(partition, rk):
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
        users[rk] = record.to_bytes()
        return
    _settle(rk, record, tenant)
    cached = await _uncache(tenant, user)
    conversations = len({m.conversation for m in removed})
    summary = Removed(len(removed), sum(m.tokens for m in removed), conversations, cached)
    notice = purged_notice(tenant, user, sorted(reasons), summary, now)
    await emit(notices_name, rk, codec.pack(notice))
    logger.info("purged %d messages of %r (%s)", len(removed), rk, ", ".join(sorted(reasons)))


async def uncache_again(uncached: set[tuple[str, str]]) -> None:
    """Once a batch is in RocksDB: delete again what its forgets and purges uncached."""
    for tenant, tag in uncached:
        await cache.delete_tagged(tenant, [tag])


pipeline = EventPipeline(app, app.topic_names.conversation_events, CONVERSATION_TYPES, handle_event)

runner = BatchedInput(
    "conversation",
    pipeline,
    conversation_users,
    tick=tick,
    tick_interval_s=app.settings.conversation_check_interval_s,
    after_write=uncache_again,
)
