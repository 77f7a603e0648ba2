"""The session state machine: merge, remove, steps, limits, deadlines, redelivery, notices."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statekeeper import codec
from statekeeper.stores.session import (
    Applied,
    Closed,
    Ended,
    Limits,
    Replay,
    Session,
    apply_event,
    closed_marker,
    closed_notice,
    due_reason,
)
from statekeeper.topics.envelope import Envelope
from statekeeper.topics.rejections import Reason, Rejected

LIMITS = Limits(max_fields=8, max_bytes=1024)
_ids = itertools.count()


def event(event_type: str, event_id: str | None = None, **data: Any) -> Envelope:
    return Envelope(
        id=event_id or f"e{next(_ids)}",
        type=event_type,
        tenant="acme",
        key="s-1",
        ts=1,
        data=data,
    )


def run(session: Session | None, ev: Envelope, at: int = 1000, offset: int = -1) -> Session:
    outcome = apply_event(session, ev, at, offset if offset >= 0 else next(_ids), LIMITS)
    assert isinstance(outcome, Applied | Ended)
    return outcome.session


def started(**data: Any) -> Session:
    return run(None, event("session.start", user="u-1", **data))


def rejection(session: Session | None, ev: Envelope) -> Reason:
    with pytest.raises(Rejected) as caught:
        apply_event(session, ev, 1000, next(_ids), LIMITS)
    return caught.value.reason


def test_start_sets_defaults_and_deadlines() -> None:
    session = started(data={"lang": "en"})
    assert (session.user, session.version, session.step, session.data) == (
        "u-1",
        1,
        None,
        {"lang": "en"},
    )
    assert session.idle_deadline == 1000 + 1800 * 1000
    assert session.absolute_deadline == 1000 + 86400 * 1000
    assert session.deadline == session.idle_deadline


def test_update_merges_removes_and_records_steps() -> None:
    session = started(data={"a": 1, "b": 2})
    session = run(session, event("session.update", step="one", data={"c": 3}), at=2000)
    session = run(session, event("session.update", step="two", data={"a": 9}, remove=["b"]))
    session = run(session, event("session.update", step="one"))
    assert session.data == {"a": 9, "c": 3}
    assert (session.step, session.steps_done) == ("one", ("one", "two"))
    assert session.version == 4


def test_idle_deadline_slides_but_absolute_does_not() -> None:
    session = started(idle_timeout_s=10, max_lifetime_s=25)
    session = run(session, event("session.update", data={"x": 1}), at=9000)
    assert session.idle_deadline == 19_000
    assert session.absolute_deadline == 26_000
    session = run(session, event("session.update", data={"x": 2}), at=18_000)
    assert session.deadline == 26_000  # the absolute deadline comes first now
    assert due_reason(session, 25_999) is None
    assert due_reason(session, 26_000) == "max_lifetime"


def test_idle_reason_when_idle_deadline_comes_first() -> None:
    session = started(idle_timeout_s=10, max_lifetime_s=100)
    assert due_reason(session, 11_000) == "idle"


def test_idle_clock_never_goes_back() -> None:
    session = started(idle_timeout_s=10)
    session = run(session, event("session.update", data={"x": 1}), at=500)
    assert session.updated_at == 1000


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, Reason.INVALID_DATA),  # no user
        ({"user": ""}, Reason.INVALID_DATA),
        ({"user": "u", "idle_timeout_s": 0}, Reason.INVALID_DATA),
        ({"user": "u", "max_lifetime_s": 1.5}, Reason.INVALID_DATA),
        ({"user": "u", "data": []}, Reason.INVALID_DATA),
        ({"user": "u", "data": {"x": b"raw"}}, Reason.INVALID_DATA),
        ({"user": "u", "data": {"x": float("nan")}}, Reason.INVALID_DATA),
        ({"user": "u", "data": {"x": {"y": {"z": b"raw"}}}}, Reason.INVALID_DATA),
        ({"user": "u", "data": {f"f{i}": i for i in range(9)}}, Reason.SESSION_TOO_LARGE),
        ({"user": "u", "data": {"big": "x" * 2000}}, Reason.SESSION_TOO_LARGE),
    ],
)
def test_bad_start_is_refused(data: dict[str, Any], reason: Reason) -> None:
    assert rejection(None, event("session.start", **data)) == reason


@pytest.mark.parametrize(
    "data",
    [
        {"step": True},
        {"step": ""},
        {"step": 1.5},
        {"remove": "a"},
        {"remove": [1]},
        {"data": {"a": 1}, "remove": ["a"]},
        {"data": {"a": {1: 2}}},
    ],
)
def test_bad_update_is_invalid_data(data: dict[str, Any]) -> None:
    assert rejection(started(), event("session.update", **data)) == Reason.INVALID_DATA


def test_update_over_the_limits_leaves_the_session_alone() -> None:
    session = started(data={f"f{i}": i for i in range(8)})
    assert rejection(session, event("session.update", data={"f9": 9})) == Reason.SESSION_TOO_LARGE
    replaced = run(session, event("session.update", data={"f0": "new"}, remove=["f1"]))
    assert len(replaced.data) == 7


def test_start_of_live_session_and_events_of_unknown_one() -> None:
    assert rejection(started(), event("session.start", user="u")) == Reason.SESSION_EXISTS
    assert rejection(None, event("session.update", data={})) == Reason.UNKNOWN_SESSION
    assert rejection(None, event("session.end")) == Reason.UNKNOWN_SESSION


def test_redelivery_has_no_effect_and_replay_is_recognised() -> None:
    session = started()
    update = event("session.update", data={"a": 1})
    offset = next(_ids)
    after = run(session, update, offset=offset)
    assert apply_event(after, update, 2000, next(_ids), LIMITS) is None
    replay = apply_event(after, update, 2000, offset, LIMITS)
    assert isinstance(replay, Replay) and replay.session == after


def test_end_counts_as_a_change_and_keeps_the_note() -> None:
    outcome = apply_event(started(), event("session.end", reason="done"), 5000, next(_ids), LIMITS)
    assert isinstance(outcome, Ended)
    assert (outcome.session.version, outcome.session.updated_at, outcome.note) == (2, 5000, "done")


def test_stored_forms_round_trip() -> None:
    session = run(started(data={"a": [1, {"b": None}]}), event("session.update", step=3))
    assert Session.from_bytes(session.to_bytes()) == session
    notice = closed_notice(session, "ended", 5000, "bye")
    marker = closed_marker(session, "ended", 5000, notice, ("t", 1, 42), 6000)
    assert Closed.from_bytes(marker.to_bytes()) == marker
    assert set(marker.recent_ids) == {event_id for event_id, _ in session.recent}


def test_closed_notice_is_a_pure_function_of_the_session() -> None:
    session = started(data={"z": 1, "a": 2})
    first = closed_notice(session, "idle", session.deadline, None)
    again = closed_notice(Session.from_bytes(session.to_bytes()), "idle", session.deadline, None)
    assert first == again
    decoded = codec.unpack(first)
    assert decoded["reason"] == "idle" and decoded["closed_at"] == session.deadline
    assert decoded["session"]["data"] == {"z": 1, "a": 2}


# --- random updates against a reference model ---------------------------------------------

FIELDS = st.sampled_from([f"f{i}" for i in range(12)])
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.integers(-1000, 1000), max_size=3),
)


@st.composite
def updates(draw: st.DrawFn) -> dict[str, Any]:
    data = draw(st.dictionaries(FIELDS, VALUES, max_size=4))
    remove = draw(st.lists(FIELDS.filter(lambda f: f not in data), max_size=3))
    body: dict[str, Any] = {"data": data, "remove": remove}
    step = draw(st.one_of(st.none(), st.sampled_from(["a", "b", "c", 1, 2])))
    if step is not None:
        body["step"] = step
    return body


class ReferenceSession:
    """What a session should hold, written independently of the machine."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.step: Any = None
        self.done: list[Any] = []
        self.version = 1

    def update(self, body: dict[str, Any]) -> bool:
        data = dict(self.data)
        data.update(body["data"])
        for name in body["remove"]:
            data.pop(name, None)
        done = list(self.done)
        step = body.get("step", self.step)
        if step != self.step and self.step is not None and self.step not in done:
            done.append(self.step)
        if len(data) > LIMITS.max_fields or len(done) > LIMITS.max_fields:
            return False
        if len(codec.pack([data, done])) > LIMITS.max_bytes:
            return False
        self.data, self.step, self.done = data, step, done
        self.version += 1
        return True


@settings(max_examples=300, deadline=None)
@given(st.lists(updates(), max_size=25))
def test_random_updates_match_the_reference_model(bodies: list[dict[str, Any]]) -> None:
    session = started()
    model = ReferenceSession()
    for body in bodies:
        accepted = model.update(body)
        try:
            session = run(session, event("session.update", **body))
        except Rejected as rejected:
            assert rejected.reason == Reason.SESSION_TOO_LARGE
            assert not accepted
        else:
            assert accepted
        assert session.data == model.data
        assert (session.step, list(session.steps_done), session.version) == (
            model.step, model.done, model.version,
        )  # fmt: skip
