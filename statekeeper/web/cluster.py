"""Queries that span every partition: each worker answers for the partitions it owns.

A query arriving at any worker is split by partition owner (from faust's assignor), the
local share is computed here and the rest is asked of the owners over HTTP, with the same
API key (so the tenant is the same) and a header that stops further forwarding. If any
partition has no known owner, or its owner no longer owns it, the answer is 503 with
``Retry-After``: a partial answer would be a wrong one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faust.web import Request, Response, View
from yarl import URL

from statekeeper.app import app
from statekeeper.stores.scan import active_partitions, owner_urls
from statekeeper.stores.tables import workflow_items
from statekeeper.web.api import FORWARDED_HEADER, ApiError, api_view, not_ready, tenant_of

logger = logging.getLogger(__name__)

LocalQuery = Callable[[str, list[int], Mapping[str, str]], Awaitable[Any]]
"""(tenant, partitions, params) -> a JSON-able answer for those partitions."""

_queries: dict[str, LocalQuery] = {}


def local_query(name: str) -> Callable[[LocalQuery], LocalQuery]:
    """Register a per-partition query under ``name``."""

    def register(fun: LocalQuery) -> LocalQuery:
        _queries[name] = fun
        return fun

    return register


async def gather(
    request: Request, name: str, partitions: list[int], params: Mapping[str, str]
) -> list[Any]:
    """Run query ``name`` over ``partitions``, each on its owner; one answer per owner."""
    if not app.is_ready():
        raise not_ready()
    owners = owner_urls(app, workflow_items, app.settings.partitions)
    by_owner: dict[str, list[int]] = {}
    for partition in partitions:
        if partition not in owners:
            raise not_ready()
        by_owner.setdefault(owners[partition], []).append(partition)
    tenant = tenant_of(request)
    here = str(app.conf.canonical_url)
    calls = [
        _run_local(name, tenant, parts, params)
        if _same(url, here)
        else _ask(url, request, name, parts, params)
        for url, parts in by_owner.items()
    ]
    return list(await asyncio.gather(*calls))


async def _run_local(
    name: str, tenant: str, partitions: list[int], params: Mapping[str, str]
) -> Any:
    owned = active_partitions(app, workflow_items)
    if not set(partitions) <= owned or not app.is_ready():
        raise not_ready()
    return await _queries[name](tenant, partitions, params)


async def _ask(
    url: str, request: Request, name: str, partitions: list[int], params: Mapping[str, str]
) -> Any:
    query = {**params, "partitions": ",".join(map(str, partitions))}
    target = URL(url).with_path(f"/v1/_local/{name}").with_query(query)
    headers = {
        "Authorization": request.headers.get("Authorization", ""),
        FORWARDED_HEADER: "1",
    }
    try:
        async with app.http_client.get(target, headers=headers) as reply:
            if reply.status != 200:
                raise not_ready()
            return (await reply.json())["result"]
    except (TimeoutError, OSError) as exc:
        logger.warning("asking %s for %s failed: %s", url, name, exc)
        raise not_ready() from None


def _same(left: str, right: str) -> bool:
    a, b = URL(left), URL(right)
    return (a.host, a.port) == (b.host, b.port)


@app.page("/v1/_local/{name}")
@api_view
async def local_endpoint(view: View, request: Request, name: str) -> Response:
    """Internal: one worker's share of a cluster-wide query (same auth as the public API)."""
    tenant = tenant_of(request)
    if name not in _queries:
        raise ApiError(404, "not_found", f"no local query {name!r}")
    try:
        partitions = [int(p) for p in request.query.get("partitions", "").split(",") if p]
    except ValueError:
        raise ApiError(400, "bad_request", "partitions must be integers") from None
    params = {k: v for k, v in request.query.items() if k != "partitions"}
    result = await _run_local(name, tenant, partitions, params)
    return view.json({"partitions": partitions, "result": result})
