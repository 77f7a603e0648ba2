"""The item state machine: every applied change versioned, every illegal one refused."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from statekeeper.stores.definitions import parse_definition
from statekeeper.stores.workflow import Change, Item, Replay, apply_event
from statekeeper.topics.envelope import Envelope
from statekeeper.topics.rejections import Reason, Rejected

INVOICE = parse_definition(
    "acme",
    "invoice",
    {
        "states": ["draft", "sent", "paid"],
        "initial": "draft",
        "terminal": ["paid"],
        "transitions": [["draft", "sent"], ["sent", "paid"]],
    },
)
_ids = itertools.count()


def event(event_type: str, **data: Any) -> Envelope:
    return Envelope(
        id=f"e{next(_ids)}", type=event_type, tenant="acme", key="inv-1", ts=1, data=data
    )


def run(item: Item | None, ev: Envelope) -> Item:
    change = apply_event(item, ev, INVOICE, now_ms=1000, offset=next(_ids))
    assert isinstance(change, Change)
    return change.item


def started() -> Item:
    return run(None, event("workflow.start", workflow="invoice"))


def rejection(item: Item | None, ev: Envelope) -> Reason:
    with pytest.raises(Rejected) as caught:
        apply_event(item, ev, INVOICE, now_ms=1000)
    return caught.value.reason


def test_start_enters_initial_state() -> None:
    item = started()
    assert (item.state, item.condition, item.version, item.attempt) == ("draft", "active", 1, 1)


def test_reaching_terminal_state_completes() -> None:
    item = run(
        run(started(), event("workflow.transition", to="sent")),
        event("workflow.transition", to="paid"),
    )
    assert (item.state, item.condition, item.version) == ("paid", "completed", 3)


def test_status_record_names_both_states() -> None:
    change = apply_event(
        started(), event("workflow.transition", to="sent", actor="ann"), INVOICE, now_ms=5
    )
    assert isinstance(change, Change)
    assert (change.status["from"], change.status["to"], change.status["actor"]) == (
        "draft",
        "sent",
        "ann",
    )


def test_failed_item_resumes_where_it_stopped() -> None:
    item = run(started(), event("workflow.transition", to="sent"))
    failed = run(item, event("workflow.fail", error="smtp down"))
    assert (failed.condition, failed.state, failed.error["message"]) == (  # type: ignore[index]
        "failed",
        "sent",
        "smtp down",
    )
    assert rejection(failed, event("workflow.transition", to="paid")) == Reason.ILLEGAL_TRANSITION
    resumed = run(failed, event("workflow.resume"))
    assert (resumed.condition, resumed.state, resumed.attempt, resumed.error) == (
        "active",
        "sent",
        2,
        None,
    )


def test_redelivery_has_no_effect() -> None:
    move = event("workflow.transition", to="sent")
    moved = apply_event(started(), move, INVOICE, now_ms=1000, offset=next(_ids))
    assert isinstance(moved, Change)
    assert apply_event(moved.item, move, INVOICE, now_ms=2000, offset=next(_ids)) is None


def test_same_record_again_is_a_replay_of_its_version() -> None:
    move = event("workflow.transition", to="sent")
    item = started()
    offset = next(_ids)
    moved = apply_event(item, move, INVOICE, now_ms=1000, offset=offset)
    assert isinstance(moved, Change)
    later = run(moved.item, event("workflow.annotate", attrs={"a": 1}))
    assert apply_event(later, move, INVOICE, now_ms=2000, offset=offset) == Replay(version=2)


def test_a_record_read_again_behind_applied_changes_is_not_judged_again() -> None:
    """After a crash, a record rejected the first time must not apply to the newer state."""
    item = run(started(), event("workflow.fail", error="boom"))
    again_fail = event("workflow.fail", error="second")
    behind = next(_ids)  # read before the resume below, rejected then (already failed)
    resumed = run(item, event("workflow.resume"))
    with pytest.raises(Rejected) as caught:
        apply_event(resumed, again_fail, INVOICE, now_ms=2000, offset=behind)
    assert caught.value.reason == Reason.STALE_REPLAY


@pytest.mark.parametrize(
    ("ev", "reason"),
    [
        (event("workflow.transition", to="paid"), Reason.ILLEGAL_TRANSITION),
        (event("workflow.transition", to="nowhere"), Reason.ILLEGAL_TRANSITION),
        (event("workflow.transition", to="sent", expected_version=7), Reason.VERSION_CONFLICT),
        (event("workflow.transition"), Reason.INVALID_DATA),
        (event("workflow.resume"), Reason.ILLEGAL_TRANSITION),
        (event("workflow.start", workflow="invoice"), Reason.ITEM_EXISTS),
        (event("workflow.annotate", attrs={"x": {"nested": 1}}), Reason.INVALID_DATA),
    ],
)
def test_illegal_changes_are_refused(ev: Envelope, reason: Reason) -> None:
    assert rejection(started(), ev) == reason


def test_events_for_unknown_items_and_workflows() -> None:
    assert rejection(None, event("workflow.transition", to="sent")) == Reason.UNKNOWN_ITEM
    with pytest.raises(Rejected) as caught:
        apply_event(None, event("workflow.start", workflow="nope"), None, now_ms=1)
    assert caught.value.reason == Reason.UNKNOWN_WORKFLOW


def test_cancel_then_nothing_moves() -> None:
    cancelled = run(started(), event("workflow.cancel", reason="dup"))
    assert cancelled.condition == "cancelled"
    assert rejection(cancelled, event("workflow.cancel")) == Reason.ILLEGAL_TRANSITION


def test_annotate_merges_attrs_and_counts_as_a_change() -> None:
    item = run(started(), event("workflow.annotate", attrs={"customer": "c1"}))
    item = run(item, event("workflow.annotate", attrs={"amount": 12}))
    assert item.attrs == {"customer": "c1", "amount": 12}
    assert item.version == 3


def test_item_round_trips_through_bytes() -> None:
    item = run(started(), event("workflow.fail", error="boom", retryable=False))
    assert Item.from_bytes(item.to_bytes()) == item


@pytest.mark.parametrize(
    "data",
    [
        {"states": [], "initial": "a", "transitions": []},
        {"states": ["a", "a"], "initial": "a", "transitions": []},
        {"states": ["a"], "initial": "b", "transitions": []},
        {"states": ["a"], "initial": "a", "transitions": [["a", "z"]]},
        {"states": ["a"], "initial": "a", "transitions": [], "terminal": ["z"]},
        {"states": ["a"], "initial": "a", "transitions": [], "sla_seconds": {"a": 0}},
    ],
)
def test_bad_definitions_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(Rejected) as caught:
        parse_definition("acme", "w", data)
    assert caught.value.reason == Reason.INVALID_DATA


def test_rows_of_schema_version_1_are_read() -> None:
    """Before version 2 the recent ids were a list of [event id, offset] pairs."""
    from statekeeper import codec

    item = run(started(), event("workflow.transition", to="sent"))
    fields = list(item)
    fields[item._fields.index("recent")] = [list(pair) for pair in item.recent.pairs()]
    assert Item.from_bytes(codec.pack([1, *fields])) == item
    legacy = codec.pack([1, *fields[:10]])  # a row from before attrs and later fields
    assert Item.from_bytes(legacy) == Item(*item[:10])
