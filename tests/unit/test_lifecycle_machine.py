"""The resource state machine and its accounting: pure functions, no broker."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from statekeeper import codec
from statekeeper.stores.lifecycle import (
    EVENT,
    TICK,
    Ended,
    Ending,
    Replay,
    Resource,
    Stats,
    apply_event,
    expire,
)
from statekeeper.topics.envelope import Envelope
from statekeeper.topics.rejections import Reason, Rejected

_ids = itertools.count()
KEEP_MS = 60_000


def event(event_type: str, key: str = "r-1", **data: Any) -> Envelope:
    return Envelope(id=f"e{next(_ids)}", type=event_type, tenant="acme", key=key, ts=123, data=data)


def run(resource: Resource | None, ended: Ended | None, ev: Envelope, now: int) -> Any:
    return apply_event(resource, ended, ev, now, offset=next(_ids), keep_receipt_ms=KEEP_MS)


def registered(now: int = 1_000, **data: Any) -> Resource:
    outcome = run(None, None, event("resource.register", **{"kind": "upload", **data}), now)
    assert isinstance(outcome, Resource)
    return outcome


def test_register_sets_both_deadlines_and_ttl_wins_a_tie() -> None:
    resource = registered(ttl_s=10, idle_s=10, size_bytes=42, meta={"owner": "ann"})

    assert (resource.ttl_at, resource.idle_at) == (11_000, 11_000)
    assert resource.deadline() == (11_000, "ttl")
    assert resource.public()["expires_by"] == "ttl"
    assert resource.size_bytes == 42
    assert Resource.from_bytes(resource.to_bytes()) == resource


def test_touch_slides_the_idle_deadline_but_never_the_ttl() -> None:
    resource = registered(ttl_s=60, idle_s=5)
    touched = run(resource, None, event("resource.touch"), 4_000)

    assert isinstance(touched, Resource)
    assert touched.idle_at == 9_000
    assert touched.ttl_at == 61_000
    assert touched.version == 2
    assert touched.deadline() == (9_000, "idle")


def test_expiry_notice_and_receipt_hold_the_deadline_not_the_clock() -> None:
    resource = registered(idle_s=5)
    assert expire(resource, 5_999, (TICK, 7), KEEP_MS) is None

    first = expire(resource, 6_000, (TICK, 7), KEEP_MS)
    again = expire(resource, 9_500, (TICK, 7), KEEP_MS)  # the same expiry, later, after a crash

    assert first is not None and again is not None
    assert first.notice == again.notice  # byte-identical
    notice = codec.unpack(first.notice)
    assert (notice["type"], notice["reason"], notice["ts"]) == ("resource.expired", "idle", 6_000)
    assert first.ended.forget_at == 6_000 + KEEP_MS
    assert Ended.from_bytes(first.ended.to_bytes()) == first.ended


def test_release_ends_with_a_receipt_from_this_event() -> None:
    resource = registered(size_bytes=10)
    release = event("resource.release")
    ending = apply_event(resource, None, release, 2_000, offset=55, keep_receipt_ms=None)

    assert isinstance(ending, Ending)
    assert ending.ended.source == (EVENT, 55)
    assert ending.ended.forget_at is None
    notice = codec.unpack(ending.notice)
    assert (notice["type"], notice["event_id"], notice["ts"]) == (
        "resource.released",
        release.id,
        123,
    )


def test_same_id_is_a_replay_at_the_same_offset_and_a_no_op_elsewhere() -> None:
    register = event("resource.register", kind="upload")
    resource = apply_event(None, None, register, 1_000, offset=3, keep_receipt_ms=None)
    assert isinstance(resource, Resource)

    assert isinstance(apply_event(resource, None, register, 2_000, 3, None), Replay)
    assert apply_event(resource, None, register, 2_000, 4, None) is None


def test_ended_receipt_keeps_ids_so_a_redelivered_register_cannot_resurrect() -> None:
    register = event("resource.register", kind="upload", ttl_s=1)
    resource = apply_event(None, None, register, 1_000, offset=3, keep_receipt_ms=None)
    assert isinstance(resource, Resource)
    ending = expire(resource, 2_000, (TICK, 9), None)
    assert ending is not None

    assert apply_event(None, ending.ended, register, 5_000, 40, None) is None
    again = run(None, ending.ended, event("resource.register", kind="upload"), 5_000)
    assert isinstance(again, Resource)  # a new id registers a new lifecycle
    assert (register.id, 3) in again.recent


@pytest.mark.parametrize(
    ("event_type", "data", "live", "reason"),
    [
        ("resource.register", {"kind": "upload"}, True, Reason.RESOURCE_EXISTS),
        ("resource.touch", {}, False, Reason.UNKNOWN_RESOURCE),
        ("resource.release", {}, False, Reason.UNKNOWN_RESOURCE),
        ("resource.register", {}, False, Reason.INVALID_DATA),
        ("resource.register", {"kind": ""}, False, Reason.INVALID_DATA),
        ("resource.register", {"kind": "x", "ttl_s": 0}, False, Reason.INVALID_DATA),
        ("resource.register", {"kind": "x", "idle_s": "5"}, False, Reason.INVALID_DATA),
        ("resource.register", {"kind": "x", "ttl_s": True}, False, Reason.INVALID_DATA),
        ("resource.register", {"kind": "x", "size_bytes": -1}, False, Reason.INVALID_DATA),
        ("resource.register", {"kind": "x", "meta": [1]}, False, Reason.INVALID_DATA),
        (
            "resource.register",
            {"kind": "x", "meta": {"a": "b" * 20_000}},
            False,
            Reason.INVALID_DATA,
        ),
    ],
)
def test_rejections(event_type: str, data: dict, live: bool, reason: Reason) -> None:
    resource = registered() if live else None
    with pytest.raises(Rejected) as caught:
        run(resource, None, event(event_type, **data), 2_000)
    assert caught.value.reason == reason


def test_stats_follow_a_random_run() -> None:
    """Accounting equals a direct count of what is live and what ended, by reason."""
    rng = random.Random(7)
    live: dict[str, Resource] = {}
    stats = Stats()
    ended: dict[str, int] = {"ttl": 0, "idle": 0, "released": 0}
    now = 0
    for _ in range(2_000):
        now += rng.randint(0, 400)
        key = f"r-{rng.randint(0, 40)}"
        for name in [k for k, r in live.items() if r.is_due(now)]:
            ending = expire(live.pop(name), now, (TICK, now), None)
            assert ending is not None
            stats.ended(ending.ended)
            ended[ending.ended.reason] += 1
        if key not in live:
            data = {"kind": "a", "size_bytes": rng.randint(0, 99), "idle_s": rng.randint(1, 9)}
            resource = run(None, None, event("resource.register", key, **data), now)
            live[key] = resource
            stats.registered(resource)
        elif rng.random() < 0.7:
            live[key] = run(live[key], None, event("resource.touch", key), now)
        else:
            ending = run(live.pop(key), None, event("resource.release", key), now)
            stats.ended(ending.ended)
            ended["released"] += 1

    assert stats.live == len(live)
    assert stats.size == sum(r.size_bytes for r in live.values())
    assert stats.public()["expired"] == {"ttl": 0, "idle": ended["idle"]}
    assert stats.released == ended["released"]
    assert Stats.from_bytes(stats.to_bytes()) == stats
