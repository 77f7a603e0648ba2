"""The last applied (event id, source offset) pairs of an entity, kept packed.

Every event checks its id against the entity's recent ids (a redelivery, or a replay after a
crash) and appends its own. Kept as a msgpack list of pairs, that meant decoding and
re-encoding 32 pairs per event, the largest part of an item row's cost. Here they stay two
byte strings, stored as they are: ``ids`` holds each id as a 2-byte length and its UTF-8
bytes, ``offsets`` one 8-byte signed offset per id, oldest first. A lookup first asks whether
the id's bytes occur in ``ids`` at all (almost always not, and then the answer is exact);
only a hit walks the entries.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

_LENGTH = 2
_OFFSET = 8


class Seen(NamedTuple):
    """Where an id was found: 0 for the newest entry, and the offset it was applied at."""

    age: int
    offset: int


class RecentIds(NamedTuple):
    """Bounded, oldest first; immutable (``append`` returns a new value)."""

    ids: bytes = b""
    offsets: bytes = b""

    @classmethod
    def from_pairs(cls, pairs: Iterable[Sequence[Any]]) -> RecentIds:
        """From (event id, offset) pairs, oldest first (rows stored before this form)."""
        recent = cls()
        for event_id, offset in pairs:
            recent = recent.append(event_id, offset, keep=None)
        return recent

    @property
    def size(self) -> int:
        """Entries held."""
        return len(self.offsets) // _OFFSET

    def pairs(self) -> Iterator[tuple[str, int]]:
        """(event id, offset), oldest first."""
        at = 0
        for (offset,) in struct.iter_unpack(">q", self.offsets):
            size = int.from_bytes(self.ids[at : at + _LENGTH], "big")
            at += _LENGTH
            yield self.ids[at : at + size].decode(), offset
            at += size

    def find(self, event_id: str) -> Seen | None:
        """The newest entry with ``event_id``, or None."""
        if event_id.encode() not in self.ids:
            return None
        found = None
        for age, (seen_id, offset) in enumerate(reversed(list(self.pairs()))):
            if seen_id == event_id:
                found = Seen(age, offset)
                break
        return found

    def max_offset(self) -> int | None:
        """The highest offset held, or None when empty."""
        if not self.offsets:
            return None
        return max(_offsets_struct(len(self.offsets)).unpack(self.offsets))

    def append(self, event_id: str, offset: int, *, keep: int | None) -> RecentIds:
        """With (``event_id``, ``offset``) added as the newest; at most ``keep`` entries."""
        raw = event_id.encode()
        ids, offsets = self.ids, self.offsets
        if keep is not None:
            drop = len(offsets) // _OFFSET + 1 - keep  # entries over the bound once added
            if drop > 0:
                at = 0
                for _ in range(drop):
                    at += _LENGTH + _length.unpack_from(ids, at)[0]
                ids, offsets = ids[at:], offsets[drop * _OFFSET :]
        # struct and tuple.__new__: int.to_bytes with keywords and the named tuple's own
        # __new__ (a Python function) were most of the cost of an append
        return tuple.__new__(
            RecentIds,
            (b"".join((ids, _length.pack(len(raw)), raw)), offsets + _offset.pack(offset)),
        )


_length = struct.Struct(">H")  # _LENGTH bytes
_offset = struct.Struct(">q")  # _OFFSET bytes
_structs: dict[int, struct.Struct] = {}


def _offsets_struct(size: int) -> struct.Struct:
    """The compiled format of ``size`` bytes of offsets (one per entry count in use)."""
    compiled = _structs.get(size)
    if compiled is None:
        compiled = _structs[size] = struct.Struct(f">{size // _OFFSET}q")
    return compiled
