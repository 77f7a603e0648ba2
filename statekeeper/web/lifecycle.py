"""HTTP views of lifecycle management: one resource, and the tenant's accounting."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from typing import Any

from faust.web import Request, Response, View

from statekeeper import codec
from statekeeper.agents.clock import now_ms
from statekeeper.agents.pipeline import murmur2_partition
from statekeeper.app import app
from statekeeper.stores import workflow_queries
from statekeeper.stores.deadlines import LEGACY_JOURNAL, split_deadline_key
from statekeeper.stores.lifecycle import Resource, Stats
from statekeeper.stores.scan import get_in_partition, scan_prefix, scan_range
from statekeeper.stores.tables import (
    lifecycle_deadlines,
    lifecycle_resources,
    lifecycle_stats,
    workflow_retention,
)
from statekeeper.web.api import ApiError, api_view, forward_to_owner, tenant_of
from statekeeper.web.cluster import gather, local_query

NEXT_DEADLINES = 10  # earliest deadlines listed by the stats endpoint
DEADLINE_SCAN_BUDGET = 5_000  # index entries examined per partition and index


@local_query("lifecycle-stats")
async def _local_stats(tenant: str, partitions: list[int], params: Mapping[str, str]) -> Any:
    prefix = f"{tenant}\x00".encode()
    kinds: dict[str, Stats] = {}
    for partition in partitions:
        for key, value in scan_prefix(lifecycle_stats, partition, prefix):
            kinds.setdefault(key[len(prefix) :].decode(), Stats()).add(Stats.from_bytes(value))
    purged = sum(c.purged for c in workflow_queries.counts(tenant, partitions, None).values())
    return {
        "kinds": {kind: stats.to_list() for kind, stats in kinds.items()},
        "purged": {"workflow": purged},
        "next": _next_deadlines(tenant, partitions),
    }


def _next_deadlines(tenant: str, partitions: list[int]) -> list[dict[str, Any]]:
    """The tenant's earliest expiries and purges in ``partitions`` (bounded scans)."""
    found: list[dict[str, Any]] = []
    own = f"{tenant}/".encode()
    for partition in partitions:
        for at, key, value in _index(lifecycle_deadlines, partition, own):
            purpose, *rest = codec.unpack(value)
            if purpose == "expire":
                found.append({"entity": "resource", "key": key, "at": at, "action": rest[0]})
        for at, key, _ in _index(workflow_retention, partition, own):
            found.append({"entity": "workflow", "key": key, "at": at, "action": "purge"})
    return heapq.nsmallest(NEXT_DEADLINES, found, key=lambda entry: entry["at"])


def _index(table: Any, partition: int, own: bytes) -> Iterator[tuple[int, str, bytes]]:
    """(deadline, key, value) of the tenant's first entries in one deadline index."""
    listed = 0
    scan = scan_range(table, partition, b"", LEGACY_JOURNAL)
    for examined, (index_key, value) in enumerate(scan, start=1):
        at, record_key = split_deadline_key(index_key)
        if record_key.startswith(own):
            yield at, record_key[len(own) :].decode(), value
            listed += 1
        if listed >= NEXT_DEADLINES or examined >= DEADLINE_SCAN_BUDGET:
            return


@app.page("/v1/lifecycle/stats")
@api_view
async def get_stats(view: View, request: Request) -> Response:
    """Live resources and bytes by kind, ended so far, purges, and the next deadlines."""
    tenant_of(request)
    shares = await gather(request, "lifecycle-stats", list(range(app.settings.partitions)), {})
    kinds: dict[str, Stats] = {}
    total, purged, upcoming = Stats(), {"workflow": 0}, []
    for share in shares:
        for kind, values in share["kinds"].items():
            stats = Stats.from_list(values)
            kinds.setdefault(kind, Stats()).add(stats)
            total.add(stats)
        purged["workflow"] += share["purged"]["workflow"]
        upcoming += share["next"]
    body = {
        "resources": {kind: stats.public() for kind, stats in sorted(kinds.items())},
        "total": total.public(),
        "purged": purged,
        "next_deadlines": heapq.nsmallest(NEXT_DEADLINES, upcoming, key=lambda e: e["at"]),
    }
    return view.json(body)


@app.page("/v1/resources/{resource}")
@api_view
async def get_resource(view: View, request: Request, resource: str) -> Response:
    """A live resource and its deadlines; an ended one answers 404 like a missing one."""
    key = f"{tenant_of(request)}/{resource}".encode()
    forwarded = await forward_to_owner(view, request, lifecycle_resources, key)
    if forwarded is not None:
        return forwarded
    partition = murmur2_partition(key, app.settings.partitions)
    stored = get_in_partition(lifecycle_resources, partition, key)
    found = Resource.from_bytes(stored) if stored is not None else None
    if found is None or found.is_due(now_ms()):  # past a deadline: expired, tick or not
        raise ApiError(404, "not_found", f"no resource {resource!r}")
    return view.json(found.public())
