"""Pure parts of the client and the redrive command: error mapping, envelopes, selection."""

from __future__ import annotations

from typing import Any

from statekeeper.client import Event, NotFound, Unavailable
from statekeeper.client.consumer import Received
from statekeeper.client.exceptions import ApiError, error_for
from statekeeper.ops.redrive import Selection, choose
from statekeeper.topics.names import TopicNames

NAMES = TopicNames("p.")


def dead(offset: int, reason: str, event: Any, topic: str = "p.statekeeper.workflow.events"):  # type: ignore[no-untyped-def]
    value = {"v": 1, "reason": reason, "detail": "", "topic": topic, "event": event}
    return Received("p.statekeeper.deadletter", 0, offset, b"acme/x", value)


def start(key: str, event_id: str) -> dict[str, Any]:
    return Event("workflow.start", key, {"workflow": "w"}, id=event_id, ts=1).envelope("acme")


def test_errors_map_to_typed_exceptions_with_retry_semantics() -> None:
    missing = error_for(404, {"error": {"code": "not_found", "message": "no item"}}, None)
    assert isinstance(missing, NotFound) and missing.code == "not_found" and not missing.retriable
    busy = error_for(503, {"error": {"code": "recovering", "message": "wait"}}, "2")
    assert isinstance(busy, Unavailable) and busy.retriable and busy.retry_after == 2.0
    odd = error_for(500, "<html>", None)
    assert type(odd) is ApiError and odd.status == 500


def test_an_event_gets_an_id_and_keeps_a_given_one() -> None:
    generated = Event("session.end", "s-1").envelope("acme")
    assert generated["id"] and generated["tenant"] == "acme" and generated["v"] == 1
    assert Event("session.end", "s-1", id="e-1", tenant="globex").envelope("acme")["id"] == "e-1"


def test_redrive_chooses_by_reason_key_and_offsets_and_sends_each_event_once() -> None:
    records = [
        dead(0, "unknown_workflow", start("a", "e-a")),
        dead(1, "illegal_transition", start("b", "e-b")),
        dead(2, "unknown_workflow", start("c", "e-c")),
        dead(3, "unknown_workflow", start("a", "e-a")),  # redriven once, dead-lettered again
        dead(4, "undecodable", b"\xc1"),
        dead(5, "unknown_workflow", start("d", "e-d"), topic="other.statekeeper.workflow.events"),
        dead(6, "unknown_type", start("e", "e-e"), topic="p.statekeeper.session.events"),
    ]
    chosen = choose(records, NAMES, Selection(reasons=frozenset({"unknown_workflow"})))
    assert [(c.offset, c.skip is None) for c in chosen] == [
        (0, True),
        (2, True),
        (3, False),
        (5, False),
    ]
    assert chosen[2].skip == "same event as 0:0"
    assert "not an input topic" in str(chosen[3].skip)

    by_key = choose(records, NAMES, Selection(key="b"))
    assert [c.envelope["id"] for c in by_key] == ["e-b"]
    by_range = choose(records, NAMES, Selection(partition=0, from_offset=4, to_offset=6))
    assert [(c.offset, c.skip is None) for c in by_range] == [(4, False), (5, False), (6, False)]
    assert "never decoded" in str(by_range[0].skip)
    assert "does not belong" in str(by_range[2].skip)
