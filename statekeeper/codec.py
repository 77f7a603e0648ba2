"""msgpack encoding for every record statekeeper reads or writes (never pickle)."""

from __future__ import annotations

import threading
from typing import Any

import msgpack

# Nested containers deeper than this are refused before they reach any handler.
MAX_DEPTH = 32


class DecodeError(ValueError):
    """The bytes are not a msgpack value we accept."""


def pack(value: Any) -> bytes:
    """Encode a value (maps, lists, str, bytes, int, float, bool, None) as msgpack.

    One packer per thread, kept: ``msgpack.packb`` builds a packer and its buffer for every
    call, which was a third of the cost of packing a status record. A packer resets its
    buffer after each value, also when a value cannot be packed, but never shrinks it: after
    a large value the packer is let go, so no thread keeps a large buffer. Not reentrant:
    nothing may call ``pack`` while a value is being packed (no ``default=`` hooks here).
    """
    packer: msgpack.Packer | None = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    packed: bytes = packer.pack(value)
    if len(packed) > KEEP_PACKER_BELOW:
        _local.packer = None
    return packed


KEEP_PACKER_BELOW = 1 << 20  # bytes: the largest value after which a packer is kept


_local = threading.local()
_unpackb = msgpack.unpackb
"""Decodes with msgpack 1's defaults, which are ours: str for str, str map keys only
(``strict_map_key``), lists for arrays. Passed as keywords they cost 0.35 µs a call."""


def unpack(data: bytes) -> Any:
    """Decode one msgpack value, refusing trailing bytes, int map keys and deep nesting."""
    value = unpack_any_depth(data)
    check_depth(value)
    return value


def unpack_any_depth(data: bytes) -> Any:
    """:func:`unpack` without the nesting check: the caller checks (:func:`check_depth`)
    what it could not rule out otherwise (the envelope checks only ``data``)."""
    try:
        return _unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise DecodeError(
            f"not a single msgpack value ({type(exc).__name__}: {exc})"[:300]
        ) from None


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`DecodeError` when ``value`` nests deeper than ``limit`` (of MAX_DEPTH)."""
    if _deeper_than(value, limit):
        raise DecodeError(f"nesting deeper than {MAX_DEPTH}")


def unpack_stored(data: bytes) -> Any:
    """Decode bytes this worker wrote itself (table rows): no depth check, hot path."""
    return _unpackb(data)


def _deeper_than(value: Any, limit: int) -> bool:
    """True when maps/lists nest more than ``limit`` levels (a scalar is 0).

    Recursive, but never more than ``limit`` + 1 frames deep: it stops as soon as the limit
    is passed, so hostile input cannot exhaust the stack. Hot path: every record goes through.
    """
    kind = type(value)
    if kind is dict:
        children = value.values()
    elif kind is list:
        children = value
    else:
        return False
    if limit == 0:  # a container where none may be
        return True
    for child in children:  # noqa: SIM110 (a loop, not any(): twice as fast here)
        if type(child) in _CONTAINERS and _deeper_than(child, limit - 1):
            return True
    return False


_CONTAINERS = (dict, list)
