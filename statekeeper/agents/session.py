"""Session memory: session events applied to the session tables; closure on deadlines.

Session events take the batched path (:mod:`statekeeper.agents.batched`): a partition's
records are applied in order and its writes land together, after Kafka has acknowledged
them. Between batches the same runner works off each owned partition's deadline index up
to now: sessions whose idle or absolute deadline passed are closed, old closed ids are
forgotten.

Closing a session sends its ``session.closed`` notice, tombstones its row and index
entry, and writes a marker that remembers the id (events for it: ``session_closed``).
The notice is acknowledged before any of that reaches RocksDB, so a crash before the
batch is applied finds the session open and closes it again — the same notice, byte for
byte (a pure function of the session and how it closed) — and a crash after finds it
closed. A notice is never lost; a repeat is identical.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from statekeeper.agents.batched import BatchedInput
from statekeeper.agents.clock import now_ms
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
from statekeeper.stores.staged import StagedTable, Staging, emit, in_hand
from statekeeper.topics.envelope import Envelope
from statekeeper.topics.rejections import Reason, Rejected
from statekeeper.topics.session import SESSION_TYPES

logger = logging.getLogger(__name__)

settings = app.settings
events_name = app.topic_names.session_events
notices_name = app.topic_names.lifecycle_notices
limits = Limits(settings.session_max_fields, settings.session_max_bytes)
retention_ms = settings.session_closed_retention_s * 1000

live = StagedTable(session_live)
closed_ids = StagedTable(session_closed)
index = StagedTable(session_deadlines)

Source = tuple[str, int, int]


def _source(batch: Staging) -> Source:
    return (events_name, batch.partition, batch.offset)


async def handle_session_event(envelope: Envelope) -> bool:
    """Apply one session event; False when it is a redelivery with no effect."""
    key = envelope.record_key
    batch = in_hand()
    now = now_ms()
    marker = closed_ids.get(key)
    if marker is not None:
        return _closed_answer(envelope, Closed.from_bytes(marker))
    stored = live.get(key)
    before = Session.from_bytes(stored) if stored is not None else None
    if before is not None:
        reason = due_reason(before, now)
        if reason is not None:  # the clock has not come round yet: the deadline decides
            closed = await close(key, before, reason, before.deadline, None, _source(batch))
            return _closed_answer(envelope, closed)
    outcome = apply_event(before, envelope, batch.event_time(now), batch.offset, limits)
    if outcome is None:
        return False
    if isinstance(outcome, Replay):
        _write_live(key, outcome.session, None)
        metrics.replayed += 1
        return False
    if isinstance(outcome, Ended):
        closed_at = outcome.session.updated_at
        await close(key, outcome.session, ENDED, closed_at, outcome.note, _source(batch))
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
    live[key] = session.to_bytes()
    if before is not None and before.deadline != session.deadline:
        del index[deadline_key(before.deadline, key)]
    index[deadline_key(session.deadline, key)] = EXPIRE


async def close(
    key: bytes, session: Session, reason: str, closed_at: int, note: str | None, source: Source
) -> Closed:
    """Send the notice, tombstone the session, remember the id until ``forget_at``."""
    notice = closed_notice(session, reason, closed_at, note)
    await emit(notices_name, key, notice)
    del live[key]
    del index[deadline_key(session.deadline, key)]
    forget_at = closed_at + retention_ms
    marker = closed_marker(session, reason, closed_at, None, source, forget_at)
    closed_ids[key] = marker.to_bytes()
    index[deadline_key(forget_at, key)] = FORGET
    metrics.sessions_closed[reason] += 1
    return marker


async def tick(partition: int, now: int) -> None:
    """Work off this partition's due deadlines: expire, forget (and settle old closures)."""
    batch = in_hand()
    source = _source(batch)
    for entry in due(session_deadlines, partition, now, limit=settings.session_expiry_batch):
        if batch.full():
            return  # the rest next round: one flush stays one produce request
        if entry.value == EXPIRE:
            await _expire(entry, now, source)
        elif entry.value == SETTLE:
            await _settle(entry)
        elif entry.value == FORGET:
            _forget(entry)
        else:
            logger.warning("unknown session index entry %r; removed", entry.value)
            del index[entry.index_key]


async def _expire(entry: DueEntry, now: int, source: Source) -> None:
    key = entry.record_key
    stored = live.get(key)
    session = Session.from_bytes(stored) if stored is not None else None
    if closed_ids.get(key) is not None:  # closed, yet a row came back: remove it
        if session is not None:
            del live[key]
        session = None
    if session is None or session.deadline != entry.deadline:
        del index[entry.index_key]  # stale: the session moved on or is gone
        return
    reason = due_reason(session, now)
    assert reason is not None
    await close(key, session, reason, session.deadline, None, source)


async def _settle(entry: DueEntry) -> None:
    """A closure written by an older version, which kept its notice until committed.

    Re-send the copy (identical bytes; the record that closed it may not have been
    committed) and keep the id for the retention period like any closure.
    """
    key = entry.record_key
    del index[entry.index_key]
    stored = closed_ids.get(key)
    marker = Closed.from_bytes(stored) if stored is not None else None
    if marker is None or marker.entry_at != entry.deadline or marker.notice is None:
        return
    await emit(notices_name, key, marker.notice)
    forget_at = marker.closed_at + retention_ms
    closed_ids[key] = replace(marker, notice=None, entry_at=forget_at).to_bytes()
    index[deadline_key(forget_at, key)] = FORGET


def _forget(entry: DueEntry) -> None:
    key = entry.record_key
    stored = closed_ids.get(key)
    if stored is not None and Closed.from_bytes(stored).entry_at == entry.deadline:
        del closed_ids[key]
    del index[entry.index_key]


pipeline = EventPipeline(app, events_name, SESSION_TYPES, handle_session_event)

runner = BatchedInput(
    "session",
    pipeline,
    session_live,
    tick=tick,
    tick_interval_s=settings.session_check_interval_s,
)
