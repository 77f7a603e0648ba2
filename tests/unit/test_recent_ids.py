"""Recent event ids kept packed: the same answers as a list of (id, offset) pairs."""

from __future__ import annotations

from statekeeper.stores.recent import RecentIds, Seen


def filled(*pairs: tuple[str, int], keep: int | None = None) -> RecentIds:
    recent = RecentIds()
    for event_id, offset in pairs:
        recent = recent.append(event_id, offset, keep=keep)
    return recent


def test_finds_the_newest_entry_of_an_id_and_its_offset() -> None:
    recent = filled(("a", 1), ("b", 2), ("a", 3), ("c", 4))
    assert recent.find("a") == Seen(age=1, offset=3)
    assert recent.find("c") == Seen(age=0, offset=4)
    assert recent.find("d") is None


def test_an_id_inside_another_or_across_entries_is_not_found() -> None:
    recent = filled(("abc", 1), ("de", 2))
    assert recent.find("b") is None
    assert recent.find("cd") is None  # the bytes meet only across two entries
    assert recent.find("abc") == Seen(age=1, offset=1)


def test_keeps_the_newest_entries_only() -> None:
    recent = filled(*[(f"id-{n}", n) for n in range(40)], keep=32)
    assert recent.size == 32
    assert recent.find("id-7") is None
    assert recent.find("id-8") == Seen(age=31, offset=8)
    assert list(recent.pairs())[-1] == ("id-39", 39)


def test_highest_offset_whatever_the_order() -> None:
    assert RecentIds().max_offset() is None
    assert filled(("a", 9), ("b", -1), ("c", 4)).max_offset() == 9


def test_round_trips_non_ascii_ids_and_builds_from_pairs() -> None:
    pairs = [("ünïcode-id", 5), ("x" * 128, 2**40), ("\x00nul", 0)]
    recent = RecentIds.from_pairs(pairs)
    assert list(recent.pairs()) == pairs
    assert recent.find("\x00nul") == Seen(age=0, offset=0)
    assert RecentIds(*recent) == recent
