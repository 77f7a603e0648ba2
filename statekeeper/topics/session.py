"""Session events (contract section "Sessions"): their types and the validation of ``data``.

Everything here is pure. A field of the wrong type raises :class:`Rejected` with
``invalid_data``; size limits are the state machine's business (``session_too_large``),
because they depend on what the session already holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from statekeeper.topics.rejections import Reason, Rejected

START, UPDATE, END = "session.start", "session.update", "session.end"
SESSION_TYPES = frozenset({START, UPDATE, END})

DEFAULT_IDLE_TIMEOUT_S = 1800
DEFAULT_MAX_LIFETIME_S = 86400
MAX_TIMEOUT_S = 366 * 24 * 3600
MAX_USER_CHARS = 256
MAX_FIELD_CHARS = 256
MAX_STEP_CHARS = 128
MAX_NOTE_CHARS = 1024
_INT64 = 2**63

Step = str | int


@dataclass(frozen=True, slots=True)
class StartRequest:
    """``session.start {user, idle_timeout_s?, max_lifetime_s?, data?}``, validated."""

    user: str
    idle_timeout_s: int = DEFAULT_IDLE_TIMEOUT_S
    max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """``session.update {step?, data?, remove?}``, validated; ``remove`` applies after merge."""

    step: Step | None = None
    data: dict[str, Any] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EndRequest:
    """``session.end {reason?}``, validated."""

    reason: str | None = None


def parse_start(data: dict[str, Any]) -> StartRequest:
    """Validate the data of a ``session.start``."""
    user = data.get("user")
    if not isinstance(user, str) or not user or len(user) > MAX_USER_CHARS:
        raise Rejected(Reason.INVALID_DATA, f"'user' must be a string of 1-{MAX_USER_CHARS} chars")
    return StartRequest(
        user=user,
        idle_timeout_s=_seconds(data, "idle_timeout_s", DEFAULT_IDLE_TIMEOUT_S),
        max_lifetime_s=_seconds(data, "max_lifetime_s", DEFAULT_MAX_LIFETIME_S),
        data=validate_fields(data.get("data", {})),
    )


def parse_update(data: dict[str, Any]) -> UpdateRequest:
    """Validate the data of a ``session.update``."""
    step = data.get("step")
    if step is not None:
        step = validate_step(step)
    fields = validate_fields(data.get("data", {}))
    raw_remove = data.get("remove", [])
    if not isinstance(raw_remove, list):
        raise Rejected(Reason.INVALID_DATA, "'remove' must be a list of field names")
    remove = tuple(_field_name(name) for name in raw_remove)
    both = sorted(set(remove) & set(fields))
    if both:
        raise Rejected(Reason.INVALID_DATA, f"fields both set and removed: {both[:5]}")
    return UpdateRequest(step=step, data=fields, remove=remove)


def parse_end(data: dict[str, Any]) -> EndRequest:
    """Validate the data of a ``session.end``."""
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise Rejected(Reason.INVALID_DATA, "'reason' must be a string")
    return EndRequest(reason=reason[:MAX_NOTE_CHARS] if reason else None)


def validate_step(step: Any) -> Step:
    """A step is a non-empty string (up to 128 chars) or an integer."""
    if isinstance(step, bool) or not isinstance(step, str | int):
        raise Rejected(Reason.INVALID_DATA, "'step' must be a string or an integer")
    if isinstance(step, str) and not 0 < len(step) <= MAX_STEP_CHARS:
        raise Rejected(Reason.INVALID_DATA, f"'step' must be 1-{MAX_STEP_CHARS} characters")
    if isinstance(step, int) and not -_INT64 <= step < _INT64:
        raise Rejected(Reason.INVALID_DATA, "'step' must fit in 64 bits")
    return step


def validate_fields(raw: Any) -> dict[str, Any]:
    """Session data: a map of field name to a JSON value (no bytes, NaN or infinities)."""
    if not isinstance(raw, dict):
        raise Rejected(Reason.INVALID_DATA, "'data' must be a map of field -> value")
    for name, value in raw.items():
        _field_name(name)
        problem = _json_problem(value)
        if problem:
            raise Rejected(Reason.INVALID_DATA, f"field {name!r}: {problem}")
    return dict(raw)


def _field_name(name: Any) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_FIELD_CHARS:
        raise Rejected(
            Reason.INVALID_DATA, f"field names must be strings of 1-{MAX_FIELD_CHARS} chars"
        )
    return name


def _json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be answered as JSON, or None (iterative: depth is bounded)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, bool | str):
            continue
        if isinstance(item, int):
            if not -_INT64 <= item < _INT64:
                return "integers must fit in 64 bits"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "numbers must be finite"
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if not all(isinstance(name, str) for name in item):
                return "map keys must be strings"
            stack.extend(item.values())
        else:
            return f"{type(item).__name__} values are not allowed (JSON types only)"
    return None


def _seconds(data: dict[str, Any], name: str, default: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TIMEOUT_S:
        raise Rejected(Reason.INVALID_DATA, f"{name!r} must be an integer of 1-{MAX_TIMEOUT_S}")
    return value
