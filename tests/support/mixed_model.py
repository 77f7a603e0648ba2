"""A reference model of a mixed event stream: workflows, sessions, conversations, resources.

Written from the contract and the README alone (no code shared with ``statekeeper.stores``),
so the system tests compare the real workers against a second reading of the rules. The
workflow part is :class:`tests.support.model.ReferenceModel`; the others are kept simple on
purpose: every generated session, conversation and resource event is legal for its entity
except redeliveries (same id again), which must have no effect. Short-lived entities (a
session with a 1 s idle timeout, a resource with a 1 s TTL) get no further events, so their
expiry is certain whatever the processing delay.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.support.kafka import envelope
from tests.support.model import REWORK, ReferenceModel, random_stream

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()  # noqa: SIM905

Notice = tuple[str, str, str]
"""(notice type, entity key, distinguishing id): one identity per expected notice."""


@dataclass
class ModelSession:
    user: str
    data: dict[str, Any]
    step: Any = None
    steps_done: list[Any] = field(default_factory=list)
    version: int = 1


@dataclass
class ModelResource:
    kind: str
    size_bytes: int
    meta: dict[str, Any]
    version: int = 1


@dataclass
class MixedModel:
    """Expected state of every entity, and the notices the stream must produce."""

    tenant: str = "acme"
    workflows: ReferenceModel = field(default_factory=lambda: ReferenceModel(REWORK))
    sessions: dict[str, ModelSession] = field(default_factory=dict)
    closed_sessions: set[str] = field(default_factory=set)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    resources: dict[str, ModelResource] = field(default_factory=dict)
    ended_resources: set[str] = field(default_factory=set)
    notices: set[Notice] = field(default_factory=set)
    applied: set[tuple[str, str]] = field(default_factory=set)  # (entity, event id)

    def apply(self, event: dict[str, Any]) -> None:
        """Apply one event as the contract says; a redelivered id changes nothing."""
        family = event["type"].split(".")[0]
        if family == "workflow":
            self.workflows.apply(event)
            return
        entity = f"{family}/{event['key']}"
        if (entity, event["id"]) in self.applied:
            return
        self.applied.add((entity, event["id"]))
        {"session": self._session, "conversation": self._conversation, "resource": self._resource}[
            family
        ](event)

    def _session(self, event: dict[str, Any]) -> None:
        key, data, kind = event["key"], event["data"], event["type"]
        if kind == "session.start":
            self.sessions[key] = ModelSession(user=data["user"], data=dict(data.get("data", {})))
            if data.get("idle_timeout_s") == 1:  # nothing follows: it closes idle
                self._close_session(key, "idle")
            return
        session = self.sessions[key]
        session.version += 1
        if kind == "session.end":
            self._close_session(key, "ended")
            return
        session.data.update(data.get("data", {}))
        for name in data.get("remove", []):
            session.data.pop(name, None)
        step = data.get("step")
        if step is not None and step != session.step:
            if session.step is not None and session.step not in session.steps_done:
                session.steps_done.append(session.step)
            session.step = step

    def _close_session(self, key: str, reason: str) -> None:
        del self.sessions[key]
        self.closed_sessions.add(key)
        self.notices.add(("session.closed", key, reason))

    def _conversation(self, event: dict[str, Any]) -> None:
        user, data = event["key"], event["data"]
        kept = self.messages.setdefault(user, [])
        if event["type"] == "conversation.message":
            kept.append({"id": event["id"], **{k: data[k] for k in ("conversation", "role")}})
            kept[-1]["content"] = data["content"]
            return
        conversation = data.get("conversation")
        gone = [m for m in kept if conversation is None or m["conversation"] == conversation]
        # The ids of forgotten messages are forgotten too (README): a redelivery re-appends.
        self.applied -= {(f"conversation/{user}", m["id"]) for m in gone}
        self.messages[user] = [m for m in kept if m not in gone]
        self.notices.add(("conversation.forgotten", user, event["id"]))

    def _resource(self, event: dict[str, Any]) -> None:
        key, data, kind = event["key"], event["data"], event["type"]
        if kind == "resource.register":
            self.resources[key] = ModelResource(data["kind"], data["size_bytes"], data["meta"])
            if "ttl_s" in data:  # nothing follows: it expires
                self._end_resource(key, "resource.expired")
            return
        if kind == "resource.touch":
            self.resources[key].version += 1
            return
        self._end_resource(key, "resource.released")

    def _end_resource(self, key: str, notice: str) -> None:
        del self.resources[key]
        self.ended_resources.add(key)
        self.notices.add((notice, key, ""))


def notice_identity(notice: dict[str, Any]) -> Notice:
    """The identity :class:`MixedModel` expects for a notice read from the topic."""
    kind = notice["type"]
    if kind == "session.closed":
        return (kind, notice["key"], notice["reason"])
    if kind == "conversation.forgotten":
        return (kind, notice["key"], notice["event_id"])
    return (kind, notice["key"], "")


@dataclass(frozen=True)
class MixedStream:
    """(topic suffix, envelope) pairs in send order, and the model of their outcome."""

    events: list[tuple[str, dict[str, Any]]]
    model: MixedModel


def mixed_stream(rng: random.Random, size: int, tenant: str = "acme") -> MixedStream:
    """About ``size`` events over the four input topics, each entity's events in order."""
    workflow_events = random_stream(rng, items=max(1, size * 35 // 1200), tenant=tenant)
    per_entity: list[list[tuple[str, dict[str, Any]]]] = _per_item(workflow_events)
    generators = [(_session_events, size // 22), (_conversation_events, size // 50)]
    generators.append((_resource_events, size // 20))
    for make, count in generators:
        per_entity += [make(rng, n, tenant) for n in range(count)]
    events = _interleave(rng, per_entity)
    model = MixedModel(tenant=tenant)
    for _, event in events:
        model.apply(event)
    return MixedStream(events=events, model=model)


def _per_item(stream: list[dict[str, Any]]) -> list[list[tuple[str, dict[str, Any]]]]:
    by_key: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for event in stream:
        by_key.setdefault(event["key"], []).append(("workflow.events", event))
    return list(by_key.values())


def _interleave(rng: random.Random, lists: list[list[Any]]) -> list[Any]:
    cursors = [0] * len(lists)
    live = [n for n, items in enumerate(lists) if items]
    out: list[Any] = []
    while live:
        slot = rng.randrange(len(live))
        n = live[slot]
        out.append(lists[n][cursors[n]])
        cursors[n] += 1
        if cursors[n] == len(lists[n]):
            live[slot] = live[-1]
            live.pop()
    return out


def _event(kind: str, key: str, tenant: str, data: dict[str, Any]) -> dict[str, Any]:
    return envelope(kind, key, data, tenant=tenant, id=uuid.uuid4().hex)


def _with_redeliveries(rng: random.Random, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for event in events:
        out.append(event)
        if rng.random() < 0.08:
            out.append(rng.choice(out[-4:]))  # the same id again: no effect
    return out


def _session_events(rng: random.Random, n: int, tenant: str) -> list[tuple[str, dict[str, Any]]]:
    key = f"sess-{n}"
    if rng.random() < 0.1:
        start = {"user": f"u{n}", "idle_timeout_s": 1, "data": {"short": True}}
        return [("session.events", _event("session.start", key, tenant, start))]
    events = [_event("session.start", key, tenant, {"user": f"u{n}", "data": {"n": n}})]
    for step in range(rng.randint(1, 6)):
        update: dict[str, Any] = {"step": f"s{step}", "data": {rng.choice(WORDS): step}}
        if rng.random() < 0.3:
            update["remove"] = ["n"]
        events.append(_event("session.update", key, tenant, update))
    if rng.random() < 0.5:
        events.append(_event("session.end", key, tenant, {"reason": "done"}))
    return [("session.events", e) for e in _with_redeliveries(rng, events)]


def _conversation_events(
    rng: random.Random, n: int, tenant: str
) -> list[tuple[str, dict[str, Any]]]:
    user = f"user-{n}"
    events: list[dict[str, Any]] = []
    for turn in range(rng.randint(3, 16)):
        if events and rng.random() < 0.08:
            forget = {"conversation": f"c{rng.randint(0, 2)}"} if rng.random() < 0.7 else {}
            events.append(_event("conversation.forget", user, tenant, forget))
            continue
        message = {
            "conversation": f"c{rng.randint(0, 2)}",
            "role": rng.choice(["user", "assistant"]),
            "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 12))) + f" {turn}",
        }
        events.append(_event("conversation.message", user, tenant, message))
    return [("conversation.events", e) for e in _with_redeliveries(rng, events)]


def _resource_events(rng: random.Random, n: int, tenant: str) -> list[tuple[str, dict[str, Any]]]:
    key = f"res-{n}"
    register: dict[str, Any] = {
        "kind": rng.choice(["file", "vm", "lease"]),
        "size_bytes": rng.randint(0, 10**6),
        "meta": {"n": n},
    }
    if rng.random() < 0.1:
        register["ttl_s"] = 1
        return [("lifecycle.events", _event("resource.register", key, tenant, register))]
    events = [_event("resource.register", key, tenant, register)]
    events += [_event("resource.touch", key, tenant, {}) for _ in range(rng.randint(0, 4))]
    if rng.random() < 0.4:
        events.append(_event("resource.release", key, tenant, {}))
    return [("lifecycle.events", e) for e in _with_redeliveries(rng, events)]
