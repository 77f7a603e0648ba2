"""An independent reference model of workflow items, and random event streams for it.

Written from the contract alone (it shares no code with statekeeper.stores.workflow), so
tests compare the real pipeline against a second reading of the same rules.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.support.kafka import envelope

REWORK = {
    "states": ["draft", "sent", "paid", "void"],
    "initial": "draft",
    "terminal": ["paid", "void"],
    "transitions": [
        ["draft", "sent"], ["sent", "draft"], ["sent", "paid"], ["draft", "void"], ["sent", "void"],
    ],
}  # fmt: skip


@dataclass
class ModelItem:
    state: str
    condition: str = "active"
    version: int = 1
    attempt: int = 1
    attrs: dict[str, Any] = field(default_factory=dict)
    history: list[tuple[Any, str, str, int]] = field(default_factory=list)


@dataclass
class ReferenceModel:
    definition: dict[str, Any]
    workflow: str = "invoice"
    items: dict[str, ModelItem] = field(default_factory=dict)
    applied_ids: dict[str, set[str]] = field(default_factory=dict)
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (event id, reason)

    def apply(self, event: dict[str, Any]) -> None:
        key, data, kind = event["key"], event["data"], event["type"].split(".")[1]
        if event["id"] in self.applied_ids.get(key, set()):
            return
        reason = self._reason(kind, key, data)
        if reason is not None:
            self.rejections.append((event["id"], reason))
            return
        item = self.items.get(key)
        before = item.state if item else None
        if kind == "start":
            item = self.items[key] = ModelItem(state=self.definition["initial"])
            item.attrs.update(data.get("attrs", {}))
        else:
            assert item is not None
            item.version += 1
            self._change(item, kind, data)
        item.history.append((before, item.state, item.condition, item.version))
        self.applied_ids.setdefault(key, set()).add(event["id"])

    def _reason(self, kind: str, key: str, data: dict[str, Any]) -> str | None:
        item = self.items.get(key)
        if kind == "start":
            if item is not None:
                return "item_exists"
            return None if data["workflow"] == self.workflow else "unknown_workflow"
        if item is None:
            return "unknown_item"
        if "expected_version" in data and data["expected_version"] != item.version:
            return "version_conflict"
        allowed = {
            "transition": item.condition == "active"
            and [item.state, data.get("to")] in self.definition["transitions"],
            "fail": item.condition == "active",
            "resume": item.condition == "failed",
            "cancel": item.condition in ("active", "failed"),
            "annotate": True,
        }[kind]
        return None if allowed else "illegal_transition"

    def _change(self, item: ModelItem, kind: str, data: dict[str, Any]) -> None:
        if kind == "transition":
            item.state = data["to"]
            if item.state in self.definition["terminal"]:
                item.condition = "completed"
        elif kind == "fail":
            item.condition = "failed"
        elif kind == "resume":
            item.condition, item.attempt = "active", item.attempt + 1
        elif kind == "cancel":
            item.condition = "cancelled"
        else:
            item.attrs.update(data["attrs"])

    def counts(self) -> dict[str, dict[str, int]]:
        states = Counter(i.state for i in self.items.values())
        conditions = Counter(i.condition for i in self.items.values())
        return {
            "states": {s: states.get(s, 0) for s in self.definition["states"]},
            "conditions": dict(conditions),
        }


def random_stream(rng: random.Random, items: int, tenant: str = "acme") -> list[dict[str, Any]]:
    """Per-item random event sequences (legal, illegal, duplicated), interleaved at random."""
    per_item = [_item_events(rng, f"item-{n}", tenant) for n in range(items)]
    stream: list[dict[str, Any]] = []
    cursors = [0] * items
    live = [n for n in range(items) if per_item[n]]
    while live:
        n = rng.choice(live)
        stream.append(per_item[n][cursors[n]])
        cursors[n] += 1
        if cursors[n] == len(per_item[n]):
            live.remove(n)
    return stream


def _item_events(rng: random.Random, key: str, tenant: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    if rng.random() < 0.9:
        workflow = "invoice" if rng.random() < 0.97 else "unknown"
        events.append(
            _event(
                "workflow.start",
                key,
                tenant,
                {"workflow": workflow, "attrs": {"n": rng.randint(0, 3)}},
            )
        )
    for _ in range(rng.randint(2, 20)):
        if events and rng.random() < 0.1:
            events.append(rng.choice(events[-5:]))  # a redelivery of a recent event
            continue
        kind = rng.choices(
            ["transition", "fail", "resume", "cancel", "annotate", "start"],
            weights=[10, 2, 2, 1, 2, 1],
        )[0]
        data: dict[str, Any] = {
            "transition": lambda: {"to": rng.choice(REWORK["states"])},
            "fail": lambda: {"error": "boom"},
            "resume": lambda: {},
            "cancel": lambda: {},
            "annotate": lambda: {"attrs": {"tag": rng.choice("abc")}},
            "start": lambda: {"workflow": "invoice"},
        }[kind]()
        if kind != "start" and rng.random() < 0.1:
            data["expected_version"] = rng.randint(1, 6)
        events.append(_event(f"workflow.{kind}", key, tenant, data))
    return events


def _event(kind: str, key: str, tenant: str, data: dict[str, Any]) -> dict[str, Any]:
    return envelope(kind, key, data, tenant=tenant, id=uuid.uuid4().hex)
