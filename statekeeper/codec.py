"""msgpack encoding for every record statekeeper reads or writes (never pickle)."""

from __future__ import annotations

from typing import Any

import msgpack

# Nested containers deeper than this are refused before they reach any handler.
MAX_DEPTH = 32


class DecodeError(ValueError):
    """The bytes are not a msgpack value we accept."""


def pack(value: Any) -> bytes:
    """Encode a value (maps, lists, str, bytes, int, float, bool, None) as msgpack."""
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Decode one msgpack value, refusing trailing bytes, int map keys and deep nesting."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise DecodeError(
            f"not a single msgpack value ({type(exc).__name__}: {exc})"[:300]
        ) from None
    if nesting_depth(value) > MAX_DEPTH:
        raise DecodeError(f"nesting deeper than {MAX_DEPTH}")
    return value


def nesting_depth(value: Any) -> int:
    """Depth of nested maps/lists (a scalar is 0), computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest
