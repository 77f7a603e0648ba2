"""Session memory: the stored session, the state machine that changes it, and its tables.

The machine is pure (:func:`apply_event`, :func:`due_reason`, :func:`closed_notice`): it
takes the stored session, the event and the event's time and returns what to write, or
raises :class:`Rejected`. The agent in :mod:`statekeeper.agents.session` does the I/O.

Times are milliseconds since the epoch. An event's time is its Kafka record timestamp
(capped at the worker's clock), so reprocessing the same records gives the same session,
byte for byte, on any worker; that is what makes a repeated ``session.closed`` notice
identical (see the README, "Sessions").

| table | key | value |
|---|---|---|
| ``session-live`` | ``{tenant}/{session}`` | :class:`Session` |
| ``session-closed`` | ``{tenant}/{session}`` | :class:`Closed`: the memory of a closed id |
| ``session-deadlines`` | deadline (8 bytes) ``{tenant}/{session}`` | EXPIRE, SETTLE or FORGET |
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from statekeeper import codec
from statekeeper.stores.tables import bytes_table
from statekeeper.topics.envelope import Envelope
from statekeeper.topics.rejections import Reason, Rejected, refuse_stale_replay
from statekeeper.topics.session import (
    END,
    START,
    Step,
    parse_end,
    parse_start,
    parse_update,
)

STORE_VERSION = 1
RECENT_IDS = 32  # (event id, source offset) remembered per session, see apply_event
ENDED, IDLE, MAX_LIFETIME = "ended", "idle", "max_lifetime"

# What a deadline index entry asks for when it falls due.
EXPIRE = b"e"  # a live session reaches its idle or absolute deadline
SETTLE = b"s"  # a closure's records may not be durable yet: check, re-send if lost
FORGET = b"f"  # a closed id's memory ends; the id may be started afresh


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one session may hold (settings ``session_max_fields`` / ``_bytes``)."""

    max_fields: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Session:
    """One live session as stored in ``session-live`` (msgpack, with a schema version)."""

    tenant: str
    key: str
    user: str
    step: Step | None
    steps_done: tuple[Step, ...]
    data: dict[str, Any]
    created_at: int
    updated_at: int  # last applied event: the idle clock starts here
    idle_timeout_s: int
    max_lifetime_s: int
    version: int
    recent: tuple[tuple[str, int], ...] = ()  # last applied (event id, source offset)

    @property
    def idle_deadline(self) -> int:
        return self.updated_at + self.idle_timeout_s * 1000

    @property
    def absolute_deadline(self) -> int:
        return self.created_at + self.max_lifetime_s * 1000

    @property
    def deadline(self) -> int:
        """When the session closes unless an event comes first (the earlier deadline)."""
        return min(self.idle_deadline, self.absolute_deadline)

    def to_bytes(self) -> bytes:
        return codec.pack([STORE_VERSION, *(getattr(self, name) for name in _SESSION_FIELDS)])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Session:
        stored = codec.unpack_stored(raw)
        if stored[0] != STORE_VERSION:
            raise ValueError(f"stored session has schema version {stored[0]}")
        values = dict(zip(_SESSION_FIELDS, stored[1:], strict=True))
        values["steps_done"] = tuple(values["steps_done"])
        values["recent"] = tuple((event_id, offset) for event_id, offset in values["recent"])
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """The session as ``GET /v1/sessions/{session}`` and the closed notice show it."""
        return {
            "key": self.key,
            "user": self.user,
            "step": self.step,
            "steps_done": list(self.steps_done),
            "data": self.data,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "idle_timeout_s": self.idle_timeout_s,
            "max_lifetime_s": self.max_lifetime_s,
            "idle_deadline": self.idle_deadline,
            "absolute_deadline": self.absolute_deadline,
            "version": self.version,
        }


_SESSION_FIELDS = tuple(f.name for f in fields(Session))


@dataclass(frozen=True, slots=True)
class Closed:
    """What is remembered of a closed session, for ``session_closed_retention_s``.

    ``notice`` keeps the exact bytes of the ``session.closed`` notice until the record
    that closed the session (``source``: topic, partition, offset) is committed, which
    in faust implies every record it produced was acknowledged. Until then a restart or
    rebalance re-sends that copy, so the notice is never lost and a repeat is identical.
    """

    reason: str
    closed_at: int
    version: int
    recent_ids: tuple[str, ...]  # applied event ids: their redelivery has no effect
    source: tuple[str, int, int]
    entry_at: int  # this id's deadline index entry: SETTLE while notice is kept, else FORGET
    session_deadline: int  # the live session's index entry, tombstoned again on a re-send
    notice: bytes | None = None

    def to_bytes(self) -> bytes:
        return codec.pack([STORE_VERSION, *(getattr(self, name) for name in _CLOSED_FIELDS)])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Closed:
        stored = codec.unpack_stored(raw)
        if stored[0] != STORE_VERSION:
            raise ValueError(f"stored closed marker has schema version {stored[0]}")
        values = dict(zip(_CLOSED_FIELDS, stored[1:], strict=True))
        values["recent_ids"] = tuple(values["recent_ids"])
        values["source"] = tuple(values["source"])
        return cls(**values)


_CLOSED_FIELDS = tuple(f.name for f in fields(Closed))


@dataclass(frozen=True, slots=True)
class Applied:
    """A start or an update: the session to store."""

    session: Session


@dataclass(frozen=True, slots=True)
class Ended:
    """A ``session.end``: the final session (version counted) and the caller's note."""

    session: Session
    note: str | None


@dataclass(frozen=True, slots=True)
class Replay:
    """The same record (id and source offset) processed again after a crash.

    Its change may be in RocksDB but not in the changelog, so the agent writes the
    session's row and index entry again (idempotent rewrites).
    """

    session: Session


Outcome = Applied | Ended | Replay | None


def apply_event(
    session: Session | None, event: Envelope, at_ms: int, offset: int, limits: Limits
) -> Outcome:
    """Apply one session event read at source ``offset`` at time ``at_ms``.

    None means a redelivery of an applied event (same id, another offset): no effect.
    """
    if session is not None:
        for seen_id, seen_offset in session.recent:
            if seen_id == event.id:
                return Replay(session) if seen_offset == offset else None
        refuse_stale_replay(session.recent, offset)
    if event.type == START:
        if session is not None:
            raise Rejected(Reason.SESSION_EXISTS, f"session {event.key!r} is live")
        return Applied(_remember(_start(event, at_ms, limits), event.id, offset))
    if session is None:
        raise Rejected(Reason.UNKNOWN_SESSION, f"no session {event.key!r}; send session.start")
    if event.type == END:
        note = parse_end(event.data).reason
        return Ended(_remember(_touch(session, at_ms), event.id, offset), note)
    return Applied(_remember(_update(session, event, at_ms, limits), event.id, offset))


def _start(event: Envelope, at_ms: int, limits: Limits) -> Session:
    request = parse_start(event.data)
    _check_size(request.data, (), limits)
    return Session(
        tenant=event.tenant,
        key=event.key,
        user=request.user,
        step=None,
        steps_done=(),
        data=request.data,
        created_at=at_ms,
        updated_at=at_ms,
        idle_timeout_s=request.idle_timeout_s,
        max_lifetime_s=request.max_lifetime_s,
        version=1,
    )


def _update(session: Session, event: Envelope, at_ms: int, limits: Limits) -> Session:
    """Merge fields (top level), then remove fields, then move to the new step.

    Leaving step P for another step marks P done (each step once, in the order done).
    """
    request = parse_update(event.data)
    data = {**session.data, **request.data}
    for name in request.remove:
        data.pop(name, None)
    step, done = session.step, session.steps_done
    if request.step is not None and request.step != step:
        if step is not None and step not in done:
            done = (*done, step)
        step = request.step
    _check_size(data, done, limits)
    return replace(_touch(session, at_ms), data=data, step=step, steps_done=done)


def _touch(session: Session, at_ms: int) -> Session:
    # Timestamps of different producers may go backwards: the idle clock never does.
    return replace(session, version=session.version + 1, updated_at=max(session.updated_at, at_ms))


def _remember(session: Session, event_id: str, offset: int) -> Session:
    return replace(session, recent=(*session.recent, (event_id, offset))[-RECENT_IDS:])


def _check_size(data: dict[str, Any], done: tuple[Step, ...], limits: Limits) -> None:
    if len(data) > limits.max_fields or len(done) > limits.max_fields:
        raise Rejected(
            Reason.SESSION_TOO_LARGE,
            f"{len(data)} fields and {len(done)} steps done; the limit is {limits.max_fields}",
        )
    size = len(codec.pack([data, list(done)]))
    if size > limits.max_bytes:
        raise Rejected(
            Reason.SESSION_TOO_LARGE, f"session data is {size} bytes; limit {limits.max_bytes}"
        )


def due_reason(session: Session, now_ms: int) -> str | None:
    """``idle`` or ``max_lifetime`` once the session's deadline has passed, else None."""
    if session.deadline > now_ms:
        return None
    return MAX_LIFETIME if session.absolute_deadline <= session.idle_deadline else IDLE


def closed_notice(session: Session, reason: str, closed_at: int, note: str | None) -> bytes:
    """The ``session.closed`` notice: a pure function of the session and how it closed.

    No wall-clock field: the same closure computed twice gives the same bytes.
    """
    notice: dict[str, Any] = {
        "v": 1,
        "type": "session.closed",
        "tenant": session.tenant,
        "key": session.key,
        "reason": reason,
        "closed_at": closed_at,
        "session": session.public(),
    }
    if note:
        notice["note"] = note
    return codec.pack(notice)


def closed_marker(
    session: Session,
    reason: str,
    closed_at: int,
    notice: bytes | None,
    source: tuple[str, int, int],
    settle_at: int,
) -> Closed:
    """The memory of a session just closed (``notice``: a copy kept until settled)."""
    return Closed(
        reason=reason,
        closed_at=closed_at,
        version=session.version,
        recent_ids=tuple(event_id for event_id, _ in session.recent),
        source=source,
        entry_at=settle_at,
        session_deadline=session.deadline,
        notice=notice,
    )


session_live = bytes_table("session-live", "live sessions: user, step, data, deadlines")
session_closed = bytes_table("session-closed", "ids of closed sessions, for a retention period")
session_deadlines = bytes_table("session-deadlines", "session expiry, settle and forget times")
