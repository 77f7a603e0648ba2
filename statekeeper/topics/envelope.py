"""The event envelope of the contract (section 2), decoded and validated in one place."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from statekeeper import codec
from statekeeper.topics.rejections import Reason, Rejected

ENVELOPE_VERSION = 1
_TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_CONTROL_RE = re.compile(r"[\x00-\x1f]")
MAX_ID_CHARS = 128
MAX_KEY_BYTES = 256


class Envelope(NamedTuple):
    """One validated input event.

    A named tuple: every input record makes one, and a tuple is built in one step where a
    frozen dataclass sets each field through ``object.__setattr__``. ``data`` is never
    changed in place (the default map is shared).
    """

    id: str
    type: str
    tenant: str
    key: str
    ts: int
    data: dict[str, Any] = {}  # noqa: RUF012 (shared default, never mutated: see above)
    v: int = ENVELOPE_VERSION

    @property
    def record_key(self) -> bytes:
        """The Kafka record key this event belongs under: ``{tenant}/{key}``."""
        return f"{self.tenant}/{self.key}".encode()

    def as_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "id": self.id,
            "type": self.type,
            "tenant": self.tenant,
            "key": self.key,
            "ts": self.ts,
            "data": self.data,
        }


def decode_envelope(raw: bytes | None, *, max_bytes: int, types: frozenset[str]) -> Envelope:
    """Decode and validate a record value; raise :class:`Rejected` with a reason code.

    ``types`` is the set of event types accepted on the topic the record came from.
    """
    if raw is None:
        raise Rejected(Reason.UNDECODABLE, "record has no value")
    if len(raw) > max_bytes:
        raise Rejected(Reason.OVERSIZE, f"record is {len(raw)} bytes, limit is {max_bytes}")
    try:
        value = codec.unpack_any_depth(raw)
        if type(value) is dict:
            envelope = _quick(value, types)
            # Valid, and no field besides the envelope's: only ``data`` can nest.
            if envelope is not None and len(value) == (7 if "data" in value else 6):
                codec.check_depth(envelope.data, codec.MAX_DEPTH - 1)
                return envelope
        codec.check_depth(value)
    except codec.DecodeError as exc:
        raise Rejected(Reason.UNDECODABLE, str(exc)) from None
    if not isinstance(value, dict):
        raise Rejected(Reason.INVALID_ENVELOPE, f"envelope is a {_kind(value)}, not a map", value)
    return validate_envelope(value, types=types)


def validate_envelope(value: dict[str, Any], *, types: frozenset[str]) -> Envelope:
    """Validate an already decoded envelope map (also used by ``POST /v1/events``).

    Every input record comes through here, so the common case — every field as it should
    be, a tenant seen before, an ASCII key — is checked in one expression; anything else
    goes through the field-by-field checks, which name what is wrong (or accept it).
    """
    return _quick(value, types) or _validate_each_field(value, types=types)


def _quick(value: dict[str, Any], types: frozenset[str]) -> Envelope | None:
    """The envelope when it is the common case (see :func:`validate_envelope`), else None."""
    get = value.get
    version, event_id, event_type, tenant, key, ts, data = (
        get("v"), get("id"), get("type"), get("tenant"), get("key"), get("ts"),
        get("data", _NO_DATA),
    )  # fmt: skip
    if (
        type(version) is int
        and version == ENVELOPE_VERSION
        and type(event_id) is str
        and 0 < len(event_id) <= MAX_ID_CHARS
        and type(event_type) is str
        and 0 < len(event_type) <= 64
        and event_type in types
        and type(tenant) is str
        and tenant in _valid_tenants
        and type(key) is str
        and 0 < len(key) <= MAX_KEY_BYTES
        and key.isascii()
        and not _CONTROL_RE.search(key)
        and type(ts) is int
        and ts >= 0
        and type(data) is dict
    ):
        return Envelope(event_id, event_type, tenant, key, ts, data)
    return None


_NO_DATA: dict[str, Any] = {}  # the shared default of Envelope.data: never changed


def _validate_each_field(value: dict[str, Any], *, types: frozenset[str]) -> Envelope:
    """:func:`validate_envelope` field by field: the reason for a refusal, in this order."""
    version = value.get("v")
    if not _is_int(version):
        raise Rejected(Reason.INVALID_ENVELOPE, "field 'v' must be an integer", value)
    if version != ENVELOPE_VERSION:
        raise Rejected(Reason.UNSUPPORTED_VERSION, f"envelope version {version} unsupported", value)
    event_id = _text(value, "id", max_chars=MAX_ID_CHARS)
    event_type = _text(value, "type", max_chars=64)
    tenant = _text(value, "tenant", max_chars=64)
    if tenant not in _valid_tenants and not _valid_tenant(tenant):
        raise Rejected(
            Reason.INVALID_ENVELOPE, "field 'tenant' must match [a-z0-9][a-z0-9_-]{0,63}", value
        )
    key = _text(value, "key", max_chars=MAX_KEY_BYTES)
    if _CONTROL_RE.search(key):
        raise Rejected(
            Reason.INVALID_ENVELOPE, "field 'key' must not hold control characters", value
        )
    if not key.isascii() and len(key.encode()) > MAX_KEY_BYTES:  # else chars are bytes
        raise Rejected(Reason.INVALID_ENVELOPE, f"field 'key' exceeds {MAX_KEY_BYTES} bytes", value)
    ts = value.get("ts")
    if type(ts) is not int or ts < 0:  # not a bool (a subclass of int), nor another subclass
        raise Rejected(Reason.INVALID_ENVELOPE, "field 'ts' must be a non-negative integer", value)
    data = value.get("data", _NO_DATA)
    if not isinstance(data, dict):
        raise Rejected(Reason.INVALID_ENVELOPE, "field 'data' must be a map", value)
    if event_type not in types:
        raise Rejected(
            Reason.UNKNOWN_TYPE,
            f"type {event_type!r} is not accepted here (expected one of {sorted(types)})",
            value,
        )
    return Envelope(event_id, event_type, tenant, key, ts, data)


_valid_tenants: set[str] = set()
"""Tenant names seen valid (few, and every event names one: a set lookup, not a regex)."""


def _valid_tenant(tenant: str) -> bool:
    if not _TENANT_RE.fullmatch(tenant):
        return False
    if len(_valid_tenants) < 10_000:
        _valid_tenants.add(tenant)
    return True


def _text(value: dict[str, Any], name: str, *, max_chars: int) -> str:
    text = value.get(name)
    if type(text) is not str or not text:  # msgpack decodes to exact str
        raise Rejected(Reason.INVALID_ENVELOPE, f"field {name!r} must be a non-empty string", value)
    if len(text) > max_chars:
        raise Rejected(Reason.INVALID_ENVELOPE, f"field {name!r} exceeds {max_chars}", value)
    return text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return type(value).__name__
