"""Workflow items: their stored form and the state machine that changes them.

Everything here is pure (no faust, no Kafka): :func:`apply_event` takes the current item,
the event and the definition and returns the new item and its status record, or raises
:class:`Rejected`. The agent in :mod:`statekeeper.agents.workflow` does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from statekeeper import codec
from statekeeper.stores.definitions import WorkflowDefinition
from statekeeper.stores.recent import RecentIds
from statekeeper.topics.envelope import Envelope
from statekeeper.topics.rejections import Reason, Rejected, refuse_stale_replay

STORE_VERSION = 2  # 1: recent ids as a list of [id, offset] pairs (still read)
RECENT_IDS = 32  # (event id, source offset) remembered per item, see apply_event
MAX_ATTRS = 64
MAX_ATTR_TEXT = 1024
MAX_NOTE_TEXT = 2048

ACTIVE, COMPLETED, FAILED, CANCELLED = "active", "completed", "failed", "cancelled"
ITEM_TYPES = frozenset(
    {
        "workflow.start",
        "workflow.transition",
        "workflow.fail",
        "workflow.resume",
        "workflow.cancel",
        "workflow.annotate",
    }
)


class Item(NamedTuple):
    """One workflow item as stored in its table: a schema version, then its fields in order.

    A named tuple rather than a dataclass because every event decodes a row, copies the item
    with its changes and encodes it again, and for a tuple each of those is one step. It is
    immutable; ``attrs`` is never changed in place either (an annotation builds a new map).
    """

    tenant: str
    key: str
    workflow: str
    state: str
    condition: str
    version: int
    attempt: int
    created_at: int
    entered_at: int
    updated_at: int
    attrs: dict[str, Any] = {}  # noqa: RUF012 (shared default, never mutated: see above)
    error: dict[str, Any] | None = None
    recent: RecentIds = RecentIds()  # last applied (event id, source offset), packed
    deadline: int | None = None  # ms: when this item becomes stuck in its state (SLA)
    purge_at: int | None = None  # ms: when this finished item is purged (retention)

    def to_bytes(self) -> bytes:
        return codec.pack([STORE_VERSION, *self])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Item:
        version, *values = codec.unpack_stored(raw)
        if version == STORE_VERSION and len(values) == _FIELDS:  # every row of this version
            ids, offsets = values[_RECENT]
            values[_RECENT] = tuple.__new__(RecentIds, (ids, offsets))
            return tuple.__new__(cls, values)  # (a named tuple's __new__ is a Python call)
        # Rows written before a field was added lack the trailing fields: their defaults.
        if len(values) > _RECENT:
            if version == STORE_VERSION:
                values[_RECENT] = RecentIds(*values[_RECENT])
            elif version == 1:  # recent ids as a list of [id, offset]
                values[_RECENT] = RecentIds.from_pairs(values[_RECENT])
        if version not in (1, STORE_VERSION):
            raise ValueError(f"stored item has schema version {version}")
        return cls(*values)

    def evolve(self, **changes: Any) -> Item:
        """A copy with ``changes``."""
        return _evolve(self, changes)

    def public(self) -> dict[str, Any]:
        """The item as ``GET /v1/workflows/{item}`` shows it."""
        body: dict[str, Any] = {
            "key": self.key,
            "workflow": self.workflow,
            "state": self.state,
            "condition": self.condition,
            "version": self.version,
            "attempt": self.attempt,
            "attrs": self.attrs,
            "created_at": self.created_at,
            "entered_at": self.entered_at,
            "updated_at": self.updated_at,
        }
        if self.error is not None:
            body["error"] = self.error
        return body


_RECENT = Item._fields.index("recent")
_FIELDS = len(Item._fields)
_FIELD_AT = {name: n for n, name in enumerate(Item._fields)}
_VERSION, _UPDATED_AT = _FIELD_AT["version"], _FIELD_AT["updated_at"]
_DEADLINE, _PURGE_AT = _FIELD_AT["deadline"], _FIELD_AT["purge_at"]


def _evolve(item: Item, changes: dict[str, Any], *overrides: tuple[int, Any]) -> Item:
    """``item`` with ``changes`` (by field name) and ``overrides`` (by field position).

    The named tuple's own ``_replace`` maps every field through the keyword arguments and
    cost 3.4 µs here, for a copy made with every event; this costs about 1.
    """
    values = list(item)
    for name, value in changes.items():
        values[_FIELD_AT[name]] = value
    for at, value in overrides:
        values[at] = value
    return tuple.__new__(Item, values)


class Change(NamedTuple):
    """The outcome of one applied event (a named tuple: one per event; a frozen dataclass
    sets each field through ``object.__setattr__``)."""

    item: Item
    status: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Replay:
    """The same record (id and source offset) processed again after a crash.

    Its change may have reached RocksDB but not the changelog or the status topic, so
    the agent writes the change's rows and status record again (idempotent rewrites).
    """

    version: int


def apply_event(
    item: Item | None,
    event: Envelope,
    definition: WorkflowDefinition | None,
    now_ms: int,
    offset: int = -1,
    retention_ms: int | None = None,
) -> Change | Replay | None:
    """Apply one item event read at source ``offset``.

    Returns the change, its item's SLA deadline and purge time set (``retention_ms``: how
    long a finished item is kept, None for ever); a :class:`Replay` for a record processed
    before (same id, same offset); or None for a redelivery of an applied event (same id,
    another offset), which has no effect at all.
    """
    if item is not None:
        seen = item.recent.find(event.id)
        if seen is not None:
            return Replay(item.version - seen.age) if seen.offset == offset else None
        highest = item.recent.max_offset()
        if offset >= 0 and highest is not None and offset < highest:  # may be a stale replay
            refuse_stale_replay(tuple(item.recent.pairs()), offset)
    recent = (item.recent if item is not None else RecentIds()).append(
        event.id, offset, keep=RECENT_IDS
    )
    if event.type == "workflow.start":
        after, source = _start(item, event, definition, now_ms, recent), None
    elif item is None:
        raise Rejected(Reason.UNKNOWN_ITEM, f"no item {event.key!r}; send workflow.start first")
    else:
        _check_expected_version(item, event)
        changes = _HANDLERS[event.type](item, event, definition, now_ms)
        after = _evolve(
            item, changes, (_VERSION, item.version + 1), (_UPDATED_AT, now_ms), (_RECENT, recent)
        )
        source = item.state
    deadline, purge_at = sla_deadline(after, definition), purge_deadline(item, after, retention_ms)
    if deadline != after.deadline or purge_at != after.purge_at:
        after = _evolve(after, {}, (_DEADLINE, deadline), (_PURGE_AT, purge_at))
    return Change(after, _status(after, event, source, now_ms))


def _start(
    item: Item | None,
    event: Envelope,
    definition: WorkflowDefinition | None,
    now_ms: int,
    recent: RecentIds,
) -> Item:
    if item is not None:
        raise Rejected(Reason.ITEM_EXISTS, f"item {event.key!r} exists (version {item.version})")
    name = event.data.get("workflow")
    if not isinstance(name, str) or not name:
        raise Rejected(Reason.INVALID_DATA, "'workflow' must be a non-empty string")
    if definition is None:
        raise Rejected(Reason.UNKNOWN_WORKFLOW, f"workflow {name!r} is not defined")
    attrs = _attrs(event.data.get("attrs", {}))
    return Item(
        tenant=event.tenant,
        key=event.key,
        workflow=name,
        state=definition.initial,
        condition=COMPLETED if definition.initial in definition.terminal else ACTIVE,
        version=1,
        attempt=1,
        created_at=now_ms,
        entered_at=now_ms,
        updated_at=now_ms,
        attrs=attrs,
        recent=recent,
    )


def _transition(
    item: Item, event: Envelope, definition: WorkflowDefinition | None, now_ms: int
) -> Changes:
    target = event.data.get("to")
    if not isinstance(target, str) or not target:
        raise Rejected(Reason.INVALID_DATA, "'to' must be a non-empty string")
    definition = _require(definition, item)
    if item.condition != ACTIVE:
        raise Rejected(
            Reason.ILLEGAL_TRANSITION, f"item is {item.condition}, only active items move"
        )
    if not definition.allows(item.state, target):
        raise Rejected(Reason.ILLEGAL_TRANSITION, f"{item.state!r} -> {target!r} is not allowed")
    condition = COMPLETED if target in definition.terminal else ACTIVE
    return {"state": target, "condition": condition, "entered_at": now_ms}


def _fail(
    item: Item, event: Envelope, definition: WorkflowDefinition | None, now_ms: int
) -> Changes:
    message = event.data.get("error")
    if not isinstance(message, str) or not message:
        raise Rejected(Reason.INVALID_DATA, "'error' must be a non-empty string")
    retryable = event.data.get("retryable", True)
    if not isinstance(retryable, bool):
        raise Rejected(Reason.INVALID_DATA, "'retryable' must be a boolean")
    if item.condition != ACTIVE:
        raise Rejected(Reason.ILLEGAL_TRANSITION, f"item is {item.condition}; only active fail")
    error = {
        "message": message[:MAX_NOTE_TEXT],
        "retryable": retryable,
        "state": item.state,
        "at": now_ms,
        "attempt": item.attempt,
    }
    return {"condition": FAILED, "error": error}


def _resume(
    item: Item, event: Envelope, definition: WorkflowDefinition | None, now_ms: int
) -> Changes:
    if item.condition != FAILED:
        raise Rejected(Reason.ILLEGAL_TRANSITION, f"item is {item.condition}; only failed resume")
    return {"condition": ACTIVE, "error": None, "attempt": item.attempt + 1}


def _cancel(
    item: Item, event: Envelope, definition: WorkflowDefinition | None, now_ms: int
) -> Changes:
    if item.condition not in (ACTIVE, FAILED):
        raise Rejected(Reason.ILLEGAL_TRANSITION, f"item is already {item.condition}")
    return {"condition": CANCELLED}


def _annotate(
    item: Item, event: Envelope, definition: WorkflowDefinition | None, now_ms: int
) -> Changes:
    merged = {**item.attrs, **_attrs(event.data.get("attrs"))}
    if len(merged) > MAX_ATTRS:
        raise Rejected(Reason.INVALID_DATA, f"an item holds at most {MAX_ATTRS} attributes")
    return {"attrs": merged}


Changes = dict[str, Any]
"""Fields an event changes, besides the version, update time and recent ids."""

_HANDLERS: dict[str, Callable[[Item, Envelope, WorkflowDefinition | None, int], Changes]] = {
    "workflow.transition": _transition,
    "workflow.fail": _fail,
    "workflow.resume": _resume,
    "workflow.cancel": _cancel,
    "workflow.annotate": _annotate,
}


def _require(definition: WorkflowDefinition | None, item: Item) -> WorkflowDefinition:
    if definition is None:
        raise Rejected(Reason.UNKNOWN_WORKFLOW, f"workflow {item.workflow!r} is not defined")
    return definition


def _check_expected_version(item: Item, event: Envelope) -> None:
    expected = event.data.get("expected_version")
    if expected is None:
        return
    if not isinstance(expected, int) or isinstance(expected, bool):
        raise Rejected(Reason.INVALID_DATA, "'expected_version' must be an integer")
    if expected != item.version:
        raise Rejected(
            Reason.VERSION_CONFLICT, f"expected version {expected}, item is at {item.version}"
        )


def _attrs(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Rejected(Reason.INVALID_DATA, "'attrs' must be a map")
    if len(raw) > MAX_ATTRS:
        raise Rejected(Reason.INVALID_DATA, f"at most {MAX_ATTRS} attributes")
    for name, value in raw.items():
        if len(name) > 64 or not name:
            raise Rejected(Reason.INVALID_DATA, "attribute names must be 1-64 characters")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise Rejected(Reason.INVALID_DATA, f"attribute {name!r} must be a scalar")
        if isinstance(value, str) and len(value) > MAX_ATTR_TEXT:
            raise Rejected(Reason.INVALID_DATA, f"attribute {name!r} exceeds {MAX_ATTR_TEXT}")
    return dict(raw)


def _status(item: Item, event: Envelope, source: str | None, now_ms: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "v": 1,
        "tenant": item.tenant,
        "key": item.key,
        "workflow": item.workflow,
        "type": event.type,
        "from": source,
        "to": item.state,
        "condition": item.condition,
        "version": item.version,
        "attempt": item.attempt,
        "event_id": event.id,
        "event_ts": event.ts,
        "ts": now_ms,
    }
    for name in ("reason", "actor"):
        value = event.data.get(name)
        if isinstance(value, str) and value:
            record[name] = value[:MAX_NOTE_TEXT]
    if item.error is not None and event.type == "workflow.fail":
        record["error"] = item.error
    return record


def purge_deadline(before: Item | None, item: Item, max_age_ms: int | None) -> int | None:
    """When a finished (completed or cancelled) item is purged; None while it is not.

    Counted from when it finished; later annotations do not move it.
    """
    if item.condition not in (COMPLETED, CANCELLED) or max_age_ms is None:
        return None
    if before is not None and before.purge_at is not None:
        return before.purge_at
    return item.updated_at + max_age_ms


def sla_deadline(item: Item, definition: WorkflowDefinition | None) -> int | None:
    """When ``item`` becomes stuck in its current state, or None (no SLA, or finished)."""
    if definition is None or item.condition in (COMPLETED, CANCELLED):
        return None
    seconds = definition.sla_seconds.get(item.state)
    return item.entered_at + seconds * 1000 if seconds else None


# --- keys of the other tables (see statekeeper.stores.tables) ---------------------------


def history_key(record_key: bytes, version: int) -> bytes:
    return record_key + b"\x00" + version.to_bytes(8, "big")


def history_prefix(record_key: bytes) -> bytes:
    return record_key + b"\x00"


def counts_key(tenant: str, workflow: str) -> bytes:
    return f"{tenant}\x00{workflow}".encode()


@dataclass(slots=True)
class Counts:
    """Items of one workflow in one partition, by state and by condition."""

    states: dict[str, int] = field(default_factory=dict)
    conditions: dict[str, int] = field(default_factory=dict)
    purged: int = 0  # finished items removed by retention, so far

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Counts:
        if raw is None:
            return cls()
        states, conditions, *purged = codec.unpack_stored(raw)
        return cls(states, conditions, purged[0] if purged else 0)

    def to_bytes(self) -> bytes:
        if self.purged:
            return codec.pack([self.states, self.conditions, self.purged])
        return codec.pack([self.states, self.conditions])

    def move(self, before: Item | None, after: Item) -> None:
        """Account for one item changing from ``before`` to ``after``."""
        if before is None:
            _bump(self.states, after.state, 1)
            _bump(self.conditions, after.condition, 1)
            return
        if before.state != after.state:  # a move with no change nets to nothing
            _bump(self.states, before.state, -1)
            _bump(self.states, after.state, 1)
        if before.condition != after.condition:
            _bump(self.conditions, before.condition, -1)
            _bump(self.conditions, after.condition, 1)

    def purge(self, item: Item) -> None:
        """Account for a finished item removed by retention."""
        _bump(self.states, item.state, -1)
        _bump(self.conditions, item.condition, -1)
        self.purged += 1

    def add(self, other: Counts) -> None:
        self.purged += other.purged
        for state, n in other.states.items():
            _bump(self.states, state, n)
        for condition, n in other.conditions.items():
            _bump(self.conditions, condition, n)


def _bump(counter: dict[str, int], name: str, delta: int) -> None:
    value = counter.get(name, 0) + delta
    if value:
        counter[name] = value
    else:
        counter.pop(name, None)
