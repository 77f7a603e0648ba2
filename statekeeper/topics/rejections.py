"""Why an input was not applied: the reason codes a dead-letter record carries."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """Reason codes on ``statekeeper.deadletter``; the README explains each one."""

    UNDECODABLE = "undecodable"
    OVERSIZE = "oversize"
    INVALID_ENVELOPE = "invalid_envelope"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_DATA = "invalid_data"
    MISROUTED = "misrouted"
    UNKNOWN_WORKFLOW = "unknown_workflow"
    UNKNOWN_ITEM = "unknown_item"
    ITEM_EXISTS = "item_exists"
    ILLEGAL_TRANSITION = "illegal_transition"
    VERSION_CONFLICT = "version_conflict"
    # lifecycle (resources)
    RESOURCE_EXISTS = "resource_exists"
    UNKNOWN_RESOURCE = "unknown_resource"
    # sessions
    UNKNOWN_SESSION = "unknown_session"
    SESSION_EXISTS = "session_exists"
    SESSION_CLOSED = "session_closed"
    SESSION_TOO_LARGE = "session_too_large"
    # crash replays (every keyed pattern)
    STALE_REPLAY = "stale_replay"
    INTERNAL_ERROR = "internal_error"


def refuse_stale_replay(recent: tuple[tuple[str, int], ...], offset: int) -> None:
    """Refuse a record read again after a crash behind changes the entity already has.

    ``recent`` holds the (event id, source offset) of the entity's last applied events and
    the caller has checked the record's id is not among them. A record at an offset below
    the newest of them was processed before the crash and not applied then (a rejection):
    judging it again against the newer state could apply it out of order, so it is
    dead-lettered again instead. Its first dead letter, if that was sent, has the reason.
    """
    if offset >= 0 and recent and offset < max(seen for _, seen in recent):
        raise Rejected(
            Reason.STALE_REPLAY,
            f"offset {offset} was read again after a crash, behind changes this entity "
            "already applied; it was not applied the first time and is not applied now",
        )


class Rejected(Exception):
    """An input that will not be applied; the agent turns it into a dead-letter record.

    It never escapes an agent: it is caught where the event is handled.
    """

    def __init__(self, reason: Reason, detail: str, event: Any = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.event = event
