"""Read-side queries over one worker's partitions of the workflow tables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from statekeeper import codec
from statekeeper.stores.deadlines import iter_due
from statekeeper.stores.scan import get_in_partition, scan_prefix
from statekeeper.stores.tables import (
    workflow_counts,
    workflow_deadlines,
    workflow_history,
    workflow_items,
)
from statekeeper.stores.workflow import Counts, Item, history_prefix

SCAN_BUDGET = 20_000  # items examined per partition per request, so a page stays fast


def history(partition: int, record_key: bytes) -> list[dict[str, Any]]:
    """Every applied change of one item, oldest first."""
    prefix = history_prefix(record_key)
    return [codec.unpack(value) for _, value in scan_prefix(workflow_history, partition, prefix)]


def counts(tenant: str, partitions: list[int], workflow: str | None) -> dict[str, Counts]:
    """Items by state and condition per workflow, summed over ``partitions``."""
    totals: dict[str, Counts] = {}
    prefix = f"{tenant}\x00".encode()
    for partition in partitions:
        for key, value in scan_prefix(workflow_counts, partition, prefix):
            name = key[len(prefix) :].decode()
            if workflow is None or name == workflow:
                totals.setdefault(name, Counts()).add(Counts.from_bytes(value))
    return totals


@dataclass(frozen=True)
class ItemFilter:
    """What ``GET /v1/workflows`` filters on; attribute values compare as query text."""

    workflow: str | None = None
    state: str | None = None
    condition: str | None = None
    attrs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ItemFilter:
        attrs = tuple(
            sorted((k[len("attr.") :], v) for k, v in query.items() if k.startswith("attr."))
        )
        return cls(query.get("workflow"), query.get("state"), query.get("condition"), attrs)

    def matches(self, item: Item) -> bool:
        if self.workflow is not None and item.workflow != self.workflow:
            return False
        if self.state is not None and item.state != self.state:
            return False
        if self.condition is not None and item.condition != self.condition:
            return False
        return all(
            name in item.attrs and as_query_text(item.attrs[name]) == wanted
            for name, wanted in self.attrs
        )


def as_query_text(value: Any) -> str:
    """How an attribute value is written in a query string (``true``, ``null``, ``12``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


@dataclass(frozen=True)
class PartitionPage:
    items: list[dict[str, Any]]
    resume_after: bytes | None  # None: the partition is exhausted


def list_items(
    tenant: str, partition: int, after: bytes | None, limit: int, wanted: ItemFilter
) -> PartitionPage:
    """Up to ``limit`` matching items of one partition in key order, after ``after``."""
    found: list[dict[str, Any]] = []
    last: bytes | None = None
    scan = scan_prefix(workflow_items, partition, f"{tenant}/".encode(), after=after)
    for examined, (key, value) in enumerate(scan, start=1):
        last = key
        item = Item.from_bytes(value)
        if wanted.matches(item):
            found.append(item.public())
            if len(found) >= limit:
                return PartitionPage(found, last)
        if examined >= SCAN_BUDGET:
            return PartitionPage(found, last)
    return PartitionPage(found, None)


def stuck(tenant: str, partitions: list[int], workflow: str | None, now: int) -> list[dict]:
    """Items past their state's SLA deadline, most overdue first."""
    found: list[dict[str, Any]] = []
    own = f"{tenant}/".encode()
    for partition in partitions:
        for entry in iter_due(workflow_deadlines, partition, now):
            if not entry.record_key.startswith(own):
                continue
            stored = get_in_partition(workflow_items, partition, entry.record_key)
            if stored is None:
                continue
            item = Item.from_bytes(stored)
            if workflow is None or item.workflow == workflow:
                overdue = now - (item.deadline or now)
                found.append({**item.public(), "deadline": item.deadline, "overdue_ms": overdue})
    return sorted(found, key=lambda body: -body["overdue_ms"])
