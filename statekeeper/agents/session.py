"""Session memory: session events applied to the session tables; closure on deadlines.

Every write lands in the session's partition, while processing a record of that
partition: an input event, or a clock tick on the session tick topic (co-partitioned).
A tick works off the partition's deadline index up to now: sessions whose idle or
absolute deadline passed are closed, closures are settled, old closed ids forgotten.

Closing a session sends its ``session.closed`` notice, tombstones its row and index
entry, and writes a marker that remembers the id (events for it: ``session_closed``) and
keeps a copy of the notice until the closing record is committed. faust commits an
offset only after flushing the producer, so a committed closing record means notice and
tombstones were acknowledged. A closure that is not settled when its partition comes to
a worker again (restart, crash, rebalance) is re-sent from the copy: a notice is never
lost, and a repeat is byte-identical.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from faust import current_event
from faust.types import TP, EventT

from statekeeper.agents.clock import PartitionClock, now_ms
from statekeeper.agents.pipeline import EventPipeline
from statekeeper.app import app
from statekeeper.metrics import metrics
from statekeeper.stores.deadlines import DueEntry, deadline_key, due
from statekeeper.stores.session import (
    ENDED,
    EXPIRE,
    FORGET,
    SETTLE,
    Applied,
    Closed,
    Ended,
    Limits,
    Replay,
    Session,
    apply_event,
    closed_marker,
    closed_notice,
    due_reason,
    session_closed,
    session_deadlines,
    session_live,
)
from statekeeper.topics.envelope import Envelope
from statekeeper.topics.rejections import Reason, Rejected
from statekeeper.topics.session import SESSION_TYPES

logger = logging.getLogger(__name__)

SETTLE_RETRY_MS = 1000  # how soon an unsettled closure is checked again

settings = app.settings
events_name = app.topic_names.session_events
notices_topic = app.topic(app.topic_names.lifecycle_notices)
limits = Limits(settings.session_max_fields, settings.session_max_bytes)
retention_ms = settings.session_closed_retention_s * 1000

# Closures this process sent, with the rebalance count at the time: their records are
# in this producer's hands, so a later commit proves them. Any other unsettled closure
# (found after a restart or a rebalance) is re-sent. Bounded by the unsettled closures.
sent_here: dict[bytes, int] = {}

Source = tuple[str, int, int]


def _source(event: EventT) -> Source:
    message = event.message
    return (message.topic, message.partition, message.offset)


def _event_time(event: EventT, now: int) -> int:
    """The record's timestamp (same on every reprocessing), never ahead of this clock."""
    stamp = event.message.timestamp
    return min(int(round(stamp * 1000)), now) if stamp else now


async def handle_session_event(envelope: Envelope) -> bool:
    """Apply one session event; False when it is a redelivery with no effect."""
    key = envelope.record_key
    event = current_event()
    assert event is not None
    now = now_ms()
    marker = session_closed.get(key)
    if marker is not None:
        return _closed_answer(envelope, Closed.from_bytes(marker))
    stored = session_live.get(key)
    before = Session.from_bytes(stored) if stored is not None else None
    if before is not None:
        reason = due_reason(before, now)
        if reason is not None:  # the tick has not come round yet: the deadline decides
            closed = await close(key, before, reason, before.deadline, None, _source(event))
            return _closed_answer(envelope, closed)
    outcome = apply_event(before, envelope, _event_time(event, now), event.message.offset, limits)
    if outcome is None:
        return False
    if isinstance(outcome, Replay):
        _write_live(key, outcome.session, None)
        metrics.replayed += 1
        return False
    if isinstance(outcome, Ended):
        closed_at = outcome.session.updated_at
        await close(key, outcome.session, ENDED, closed_at, outcome.note, _source(event))
        return True
    assert isinstance(outcome, Applied)
    _write_live(key, outcome.session, before)
    if before is None:
        metrics.sessions_started += 1
    return True


def _closed_answer(envelope: Envelope, marker: Closed) -> bool:
    if envelope.id in marker.recent_ids:
        return False  # applied before the session closed: a redelivery, no effect
    raise Rejected(Reason.SESSION_CLOSED, f"session {envelope.key!r} closed ({marker.reason})")


def _write_live(key: bytes, session: Session, before: Session | None) -> None:
    """Store the session and move its index entry to its (new) deadline."""
    session_live[key] = session.to_bytes()
    if before is not None and before.deadline != session.deadline:
        del session_deadlines[deadline_key(before.deadline, key)]
    session_deadlines[deadline_key(session.deadline, key)] = EXPIRE


async def close(
    key: bytes, session: Session, reason: str, closed_at: int, note: str | None, source: Source
) -> Closed:
    """Send the notice, tombstone the session, remember the id with a copy of the notice."""
    notice = closed_notice(session, reason, closed_at, note)
    await notices_topic.send(key=key, value=notice)
    del session_live[key]
    del session_deadlines[deadline_key(session.deadline, key)]
    settle_at = now_ms() + SETTLE_RETRY_MS
    marker = closed_marker(session, reason, closed_at, notice, source, settle_at)
    session_closed[key] = marker.to_bytes()
    session_deadlines[deadline_key(settle_at, key)] = SETTLE
    sent_here[key] = app.rebalancing_count
    metrics.sessions_closed[reason] += 1
    return marker


async def handle_tick(event: EventT) -> None:
    """Work off this partition's due deadlines: expire, settle, forget."""
    now = now_ms()
    source = _source(event)
    batch = settings.session_expiry_batch
    for entry in due(session_deadlines, event.message.partition, now, limit=batch):
        if entry.value == EXPIRE:
            await _expire(entry, now, source)
        elif entry.value == SETTLE:
            await _settle(entry, now, source)
        elif entry.value == FORGET:
            _forget(entry)
        else:
            logger.warning("unknown session index entry %r; removed", entry.value)
            del session_deadlines[entry.index_key]


async def _expire(entry: DueEntry, now: int, source: Source) -> None:
    key = entry.record_key
    stored = session_live.get(key)
    session = Session.from_bytes(stored) if stored is not None else None
    if key in session_closed:  # closed, yet a row came back (a lost tombstone): remove it
        if session is not None:
            del session_live[key]
        session = None
    if session is None or session.deadline != entry.deadline:
        del session_deadlines[entry.index_key]  # stale: the session moved on or is gone
        return
    reason = due_reason(session, now)
    assert reason is not None
    await close(key, session, reason, session.deadline, None, source)


async def _settle(entry: DueEntry, now: int, source: Source) -> None:
    """Drop the notice copy once durable; re-send it if it may have been lost."""
    key = entry.record_key
    stored = session_closed.get(key)
    marker = Closed.from_bytes(stored) if stored is not None else None
    if marker is None or marker.entry_at != entry.deadline or marker.notice is None:
        del session_deadlines[entry.index_key]
        return
    del session_deadlines[entry.index_key]
    if _committed(marker.source):
        settled = replace(marker, notice=None, entry_at=max(marker.closed_at + retention_ms, now))
        session_closed[key] = settled.to_bytes()
        session_deadlines[deadline_key(settled.entry_at, key)] = FORGET
        sent_here.pop(key, None)
        return
    retry = replace(marker, entry_at=now + SETTLE_RETRY_MS)
    if sent_here.get(key) != app.rebalancing_count:
        retry = await _resend(key, retry, source)
    session_closed[key] = retry.to_bytes()
    session_deadlines[deadline_key(retry.entry_at, key)] = SETTLE


async def _resend(key: bytes, marker: Closed, source: Source) -> Closed:
    """Write the whole closure again, from this record: its commit will prove it."""
    assert marker.notice is not None
    await notices_topic.send(key=key, value=marker.notice)
    del session_live[key]
    del session_deadlines[deadline_key(marker.session_deadline, key)]
    sent_here[key] = app.rebalancing_count
    logger.info("re-sent the closed notice of %r (its closure was not committed)", key)
    return replace(marker, source=source)


def _forget(entry: DueEntry) -> None:
    key = entry.record_key
    stored = session_closed.get(key)
    if stored is not None and Closed.from_bytes(stored).entry_at == entry.deadline:
        del session_closed[key]
    del session_deadlines[entry.index_key]


def _committed(source: tuple[str, int, int]) -> bool:
    """True once the consumer group committed past ``source`` (faust flushed first)."""
    topic, partition, offset = source
    committed = getattr(app.consumer, "_committed_offset", {}).get(TP(topic, partition))
    return committed is not None and committed > offset


pipeline = EventPipeline(app, events_name, SESSION_TYPES, handle_session_event)

clock = PartitionClock("session", session_live, settings.session_check_interval_s)


@app.agent(app.topic(events_name, clock.name))
async def session_events(stream):  # type: ignore[no-untyped-def]
    """Apply session events in per-session order; close due sessions on each tick."""
    async for event in stream.events():
        if clock.is_tick(event):
            await handle_tick(event)
        else:
            await pipeline.process(event)
