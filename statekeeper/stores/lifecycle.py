"""Resources with expiry policies: their stored form, state machine and accounting.

Everything here is pure (no faust, no Kafka): :func:`apply_event` takes the live resource
(or what remains of an ended one) and an event and returns what changes, or raises
:class:`Rejected`; :func:`expire` ends a resource whose deadline has passed. The agent in
:mod:`statekeeper.agents.lifecycle` does the I/O.

A resource ends once, by ``resource.release`` or at its deadline (``ttl``: absolute, from
registration; ``idle``: sliding, from the last register or touch). Its row is then
deleted and an :class:`Ended` receipt is kept instead, for the ``resource`` retention
period: it remembers the resource's last event ids (so a redelivered register cannot
bring it back) and the exact bytes of its notice (so a crash replay re-sends them).
Notices carry no processing time, only stored values, so one computed again after a
crash is byte-identical to the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from statekeeper import codec
from statekeeper.topics.envelope import Envelope
from statekeeper.topics.lifecycle import REGISTER, TOUCH, parse_register
from statekeeper.topics.rejections import Reason, Rejected, refuse_stale_replay

STORE_VERSION = 1
RECENT_IDS = 32  # (event id, source offset) remembered per resource

TTL, IDLE, RELEASED = "ttl", "idle", "released"
EVENT, TICK = "event", "tick"  # what an input record was: a lifecycle event or a clock tick


@dataclass(frozen=True, slots=True)
class Resource:
    """One live resource as stored in ``lifecycle-resources``."""

    tenant: str
    key: str
    kind: str
    size_bytes: int
    meta: dict[str, Any]
    register_id: str
    registered_at: int
    touched_at: int
    version: int
    ttl_s: float | None
    idle_s: float | None
    ttl_at: int | None  # ms: absolute deadline
    idle_at: int | None  # ms: sliding deadline, moved by every touch
    recent: tuple[tuple[str, int], ...] = ()

    def deadline(self) -> tuple[int, str] | None:
        """(when, reason) of the earliest deadline; ``ttl`` wins a tie."""
        pairs = ((self.ttl_at, TTL), (self.idle_at, IDLE))
        due = [(at, why) for at, why in pairs if at is not None]
        return min(due, key=lambda pair: (pair[0], pair[1] != TTL)) if due else None

    def is_due(self, now_ms: int) -> bool:
        deadline = self.deadline()
        return deadline is not None and deadline[0] <= now_ms

    def public(self) -> dict[str, Any]:
        """The resource as ``GET /v1/resources/{resource}`` shows it."""
        deadline = self.deadline()
        return {
            "key": self.key,
            "kind": self.kind,
            "size_bytes": self.size_bytes,
            "meta": self.meta,
            "registered_at": self.registered_at,
            "touched_at": self.touched_at,
            "version": self.version,
            "ttl_s": self.ttl_s,
            "idle_s": self.idle_s,
            "deadlines": {TTL: self.ttl_at, IDLE: self.idle_at},
            "expires_at": deadline[0] if deadline else None,
            "expires_by": deadline[1] if deadline else None,
        }

    def to_bytes(self) -> bytes:
        return codec.pack([STORE_VERSION, *(getattr(self, f) for f in _RESOURCE_FIELDS)])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Resource:
        values = _load(raw, _RESOURCE_FIELDS)
        values["recent"] = tuple((i, o) for i, o in values["recent"])
        return cls(**values)


_RESOURCE_FIELDS = tuple(f.name for f in fields(Resource))


@dataclass(frozen=True, slots=True)
class Ended:
    """The receipt of an ended resource, kept in ``lifecycle-ended`` until ``forget_at``."""

    tenant: str
    key: str
    kind: str
    size_bytes: int
    reason: str  # ttl, idle or released
    ended_at: int
    recent: tuple[tuple[str, int], ...]
    source: tuple[str, int]  # the input record that ended it: (EVENT or TICK, offset)
    notice: bytes  # the exact notice sent, re-sent as is when that record is replayed
    forget_at: int | None  # ms; None keeps the receipt forever

    def to_bytes(self) -> bytes:
        return codec.pack([STORE_VERSION, *(getattr(self, f) for f in _ENDED_FIELDS)])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Ended:
        values = _load(raw, _ENDED_FIELDS)
        values["recent"] = tuple((i, o) for i, o in values["recent"])
        values["source"] = tuple(values["source"])
        return cls(**values)


_ENDED_FIELDS = tuple(f.name for f in fields(Ended))


def _load(raw: bytes, names: tuple[str, ...]) -> dict[str, Any]:
    stored = codec.unpack(raw)
    if stored[0] != STORE_VERSION:
        raise ValueError(f"stored lifecycle row has schema version {stored[0]}")
    return dict(zip(names, stored[1:], strict=True))


@dataclass(frozen=True, slots=True)
class Replay:
    """The same record (id and source offset) processed again after a crash."""


@dataclass(frozen=True, slots=True)
class Ending:
    """A resource that ends now: what it was, its receipt and its notice."""

    resource: Resource
    ended: Ended

    @property
    def notice(self) -> bytes:
        return self.ended.notice


def apply_event(
    resource: Resource | None,
    ended: Ended | None,
    event: Envelope,
    now_ms: int,
    offset: int,
    keep_receipt_ms: int | None,
) -> Resource | Ending | Replay | None:
    """Apply one event read at source ``offset`` to a live (not due) resource or none.

    Returns the new resource, an :class:`Ending` (release), a :class:`Replay` (the same
    record again), or None for a redelivered id (no effect at all).
    """
    seen = resource.recent if resource is not None else ended.recent if ended else ()
    for seen_id, seen_offset in seen:
        if seen_id == event.id:
            return Replay() if seen_offset == offset else None
    refuse_stale_replay(seen, offset)
    recent = (*seen, (event.id, offset))[-RECENT_IDS:]
    if event.type == REGISTER:
        if resource is not None:
            raise Rejected(
                Reason.RESOURCE_EXISTS,
                f"resource {event.key!r} is live (registered by {resource.register_id!r}); "
                "release it first",
            )
        return register(event, now_ms, recent)
    if resource is None:
        gone = f"ended ({ended.reason})" if ended is not None else "unknown"
        raise Rejected(Reason.UNKNOWN_RESOURCE, f"resource {event.key!r} is {gone}")
    if event.type == TOUCH:
        idle_at = now_ms + int(resource.idle_s * 1000) if resource.idle_s else None
        return replace(
            resource,
            touched_at=now_ms,
            idle_at=idle_at,
            version=resource.version + 1,
            recent=recent,
        )
    notice = released_notice(resource, event)
    receipt = _receipt(resource, RELEASED, event.ts, recent, (EVENT, offset), notice)
    return Ending(resource, _keep_until(receipt, keep_receipt_ms))


def register(event: Envelope, now_ms: int, recent: tuple[tuple[str, int], ...]) -> Resource:
    """A new resource from a ``resource.register``; raise ``invalid_data``."""
    request = parse_register(event.data)
    ttl_s, idle_s = request.ttl_s, request.idle_s
    return Resource(
        tenant=event.tenant,
        key=event.key,
        kind=request.kind,
        size_bytes=request.size_bytes,
        meta=request.meta,
        register_id=event.id,
        registered_at=now_ms,
        touched_at=now_ms,
        version=1,
        ttl_s=ttl_s,
        idle_s=idle_s,
        ttl_at=now_ms + int(ttl_s * 1000) if ttl_s else None,
        idle_at=now_ms + int(idle_s * 1000) if idle_s else None,
        recent=recent,
    )


def expire(
    resource: Resource, now_ms: int, source: tuple[str, int], keep_receipt_ms: int | None
) -> Ending | None:
    """End ``resource`` if a deadline has passed; None otherwise.

    The receipt and notice hold the deadline, not ``now_ms``: expiring the same resource
    again after a crash yields the same bytes.
    """
    deadline = resource.deadline()
    if deadline is None or deadline[0] > now_ms:
        return None
    at, reason = deadline
    notice = expired_notice(resource, reason, at)
    receipt = _receipt(resource, reason, at, resource.recent, source, notice)
    return Ending(resource, _keep_until(receipt, keep_receipt_ms))


def _receipt(
    resource: Resource,
    reason: str,
    ended_at: int,
    recent: tuple[tuple[str, int], ...],
    source: tuple[str, int],
    notice: dict[str, Any],
) -> Ended:
    return Ended(
        tenant=resource.tenant,
        key=resource.key,
        kind=resource.kind,
        size_bytes=resource.size_bytes,
        reason=reason,
        ended_at=ended_at,
        recent=recent,
        source=source,
        notice=codec.pack(notice),
        forget_at=None,
    )


def _keep_until(ended: Ended, keep_receipt_ms: int | None) -> Ended:
    forget_at = None if keep_receipt_ms is None else ended.ended_at + keep_receipt_ms
    return replace(ended, forget_at=forget_at)


def _about(resource: Resource) -> dict[str, Any]:
    return {
        "v": 1,
        "tenant": resource.tenant,
        "key": resource.key,
        "kind": resource.kind,
        "size_bytes": resource.size_bytes,
        "meta": resource.meta,
        "register_id": resource.register_id,
        "registered_at": resource.registered_at,
    }


def expired_notice(resource: Resource, reason: str, deadline: int) -> dict[str, Any]:
    """``resource.expired``; ``ts`` is the deadline that passed."""
    notice = {"type": "resource.expired", **_about(resource), "reason": reason}
    return {**notice, "deadline": deadline, "ts": deadline}


def released_notice(resource: Resource, event: Envelope) -> dict[str, Any]:
    """``resource.released``; ``ts`` is the release event's own time."""
    notice = {"type": "resource.released", **_about(resource), "reason": RELEASED}
    return {**notice, "event_id": event.id, "ts": event.ts}


# --- accounting ---------------------------------------------------------------------------


def stats_key(tenant: str, kind: str) -> bytes:
    return f"{tenant}\x00{kind}".encode()


@dataclass(slots=True)
class Stats:
    """One partition's resources of one tenant and kind: live now, and ended so far."""

    live: int = 0
    size: int = 0  # bytes
    expired: dict[str, int] = field(default_factory=dict)  # by reason: ttl, idle
    released: int = 0

    @classmethod
    def from_list(cls, values: list[Any]) -> Stats:
        live, size, expired, released = values
        return cls(live, size, dict(expired), released)

    def to_list(self) -> list[Any]:
        return [self.live, self.size, self.expired, self.released]

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Stats:
        return cls() if raw is None else cls.from_list(codec.unpack(raw))

    def to_bytes(self) -> bytes:
        return codec.pack(self.to_list())

    def registered(self, resource: Resource) -> None:
        self.live += 1
        self.size += resource.size_bytes

    def ended(self, ended: Ended) -> None:
        self.live -= 1
        self.size -= ended.size_bytes
        if ended.reason == RELEASED:
            self.released += 1
        else:
            self.expired[ended.reason] = self.expired.get(ended.reason, 0) + 1

    def add(self, other: Stats) -> None:
        self.live += other.live
        self.size += other.size
        self.released += other.released
        for reason, n in other.expired.items():
            self.expired[reason] = self.expired.get(reason, 0) + n

    def public(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "bytes": self.size,
            "expired": {TTL: self.expired.get(TTL, 0), IDLE: self.expired.get(IDLE, 0)},
            "released": self.released,
        }
