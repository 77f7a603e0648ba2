"""Resource events (contract section "Resources"): their types and the validation of ``data``.

Everything here is pure. A field of the wrong type or out of range raises
:class:`Rejected` with ``invalid_data``; unknown fields are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from statekeeper import codec
from statekeeper.topics.rejections import Reason, Rejected

REGISTER, TOUCH, RELEASE = "resource.register", "resource.touch", "resource.release"
RESOURCE_TYPES = frozenset({REGISTER, TOUCH, RELEASE})

MAX_KIND_CHARS = 64
MAX_META_BYTES = 16 * 1024
MAX_SECONDS = 10 * 365 * 86_400  # ten years: longer is a unit mistake


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """``resource.register {kind, ttl_s?, idle_s?, size_bytes?, meta?}``, validated."""

    kind: str
    ttl_s: float | None = None  # absolute lifetime from registration
    idle_s: float | None = None  # sliding: from the last register or touch
    size_bytes: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


def parse_register(data: dict[str, Any]) -> RegisterRequest:
    """Validate the data of a ``resource.register``."""
    kind = data.get("kind")
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_KIND_CHARS:
        raise Rejected(Reason.INVALID_DATA, f"'kind' must be a string of 1-{MAX_KIND_CHARS}")
    if any(ord(char) < 32 for char in kind):
        raise Rejected(Reason.INVALID_DATA, "'kind' must not hold control characters")
    size = data.get("size_bytes", 0)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 2**63:
        raise Rejected(Reason.INVALID_DATA, "'size_bytes' must be a non-negative integer")
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise Rejected(Reason.INVALID_DATA, "'meta' must be a map")
    if len(codec.pack(meta)) > MAX_META_BYTES:
        raise Rejected(Reason.INVALID_DATA, f"'meta' exceeds {MAX_META_BYTES} bytes")
    return RegisterRequest(kind, _seconds(data, "ttl_s"), _seconds(data, "idle_s"), size, meta)


def _seconds(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Rejected(Reason.INVALID_DATA, f"{name!r} must be a number of seconds")
    if not 0 < value <= MAX_SECONDS:  # also refuses NaN
        raise Rejected(Reason.INVALID_DATA, f"{name!r} must be over 0 and at most {MAX_SECONDS}")
    return value
