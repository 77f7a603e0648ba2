"""HTTP views of state management (contract section 3, ``/v1/workflows``)."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from typing import Any

from faust.web import Request, Response, View

from statekeeper import codec
from statekeeper.agents.definitions import registry
from statekeeper.agents.pipeline import murmur2_partition
from statekeeper.app import app
from statekeeper.stores import workflow_queries as queries
from statekeeper.stores.scan import read_key
from statekeeper.stores.tables import workflow_items
from statekeeper.stores.workflow import Counts, Item
from statekeeper.web.api import ApiError, api_view, forward_to_owner, tenant_of
from statekeeper.web.cluster import gather, local_query

DEFAULT_LIMIT, MAX_LIMIT = 50, 500


@local_query("counts")
async def _local_counts(tenant: str, partitions: list[int], params: Mapping[str, str]) -> Any:
    found = queries.counts(tenant, partitions, params.get("workflow"))
    return {name: [c.states, c.conditions] for name, c in found.items()}


@local_query("list")
async def _local_list(tenant: str, partitions: list[int], params: Mapping[str, str]) -> Any:
    after = base64.b64decode(params["after"]) if params.get("after") else None
    page = queries.list_items(
        tenant, partitions[0], after, int(params["limit"]), queries.ItemFilter.from_query(params)
    )
    resume = base64.b64encode(page.resume_after).decode() if page.resume_after else None
    return {"items": page.items, "resume_after": resume}


@local_query("stuck")
async def _local_stuck(tenant: str, partitions: list[int], params: Mapping[str, str]) -> Any:
    return queries.stuck(tenant, partitions, params.get("workflow"), int(params["now"]))


@app.page("/v1/workflows/counts")
@api_view
async def get_counts(view: View, request: Request) -> Response:
    """Work in progress: items by state and by condition, per workflow, over all workers."""
    tenant = tenant_of(request)
    workflow = request.query.get("workflow")
    params = {"workflow": workflow} if workflow else {}
    totals: dict[str, Counts] = {}
    for definition in registry.for_tenant(tenant):
        if workflow is None or definition.name == workflow:
            totals[definition.name] = Counts(dict.fromkeys(definition.states, 0), {})
    for share in await gather(request, "counts", _all_partitions(), params):
        for name, (states, conditions) in share.items():
            totals.setdefault(name, Counts()).add(Counts(states, conditions))
    body = {name: {"states": c.states, "conditions": c.conditions} for name, c in totals.items()}
    return view.json(body)


@app.page("/v1/workflows/stuck")
@api_view
async def get_stuck(view: View, request: Request) -> Response:
    """Items longer in their state than its SLA, most overdue first."""
    tenant_of(request)
    params = {"now": str(int(time.time() * 1000))}
    if request.query.get("workflow"):
        params["workflow"] = request.query["workflow"]
    shares = await gather(request, "stuck", _all_partitions(), params)
    items = sorted((i for share in shares for i in share), key=lambda i: -i["overdue_ms"])
    return view.json({"items": items})


@app.page("/v1/workflows")
@api_view
async def list_items(view: View, request: Request) -> Response:
    """Items by workflow, state, condition and ``attr.NAME``, a page at a time."""
    tenant_of(request)
    limit = _limit(request.query.get("limit"))
    partition, after = _decode_cursor(request.query.get("cursor"))
    filters = {k: v for k, v in request.query.items() if k not in ("limit", "cursor")}
    items: list[dict[str, Any]] = []
    while partition < app.settings.partitions and len(items) < limit:
        params = {**filters, "limit": str(limit - len(items))}
        if after is not None:
            params["after"] = base64.b64encode(after).decode()
        (share,) = await gather(request, "list", [partition], params)
        items += share["items"]
        if share["resume_after"] is None:
            partition, after = partition + 1, None
        else:
            after = base64.b64decode(share["resume_after"])
            break  # a full page, or this partition's scan budget: resume here next time
    more = partition < app.settings.partitions
    return view.json(
        {"items": items, "next_cursor": _encode_cursor(partition, after) if more else None}
    )


@app.page("/v1/workflows/{item}/history")
@api_view
async def get_history(view: View, request: Request, item: str) -> Response:
    """Every applied change of one item, oldest first."""
    key = f"{tenant_of(request)}/{item}".encode()
    forwarded = await forward_to_owner(view, request, workflow_items, key)
    if forwarded is not None:
        return forwarded
    partition = murmur2_partition(key, app.settings.partitions)
    changes = queries.history(partition, key)
    if not changes:
        raise ApiError(404, "not_found", f"no workflow item {item!r}")
    return view.json({"key": item, "history": changes})


@app.page("/v1/workflows/{item}")
@api_view
async def get_item(view: View, request: Request, item: str) -> Response:
    """Where is this item now? Another tenant's item answers 404 like a missing one."""
    key = f"{tenant_of(request)}/{item}".encode()
    forwarded = await forward_to_owner(view, request, workflow_items, key)
    if forwarded is not None:
        return forwarded
    stored = read_key(workflow_items, murmur2_partition(key, app.settings.partitions), key)
    if stored is None:
        raise ApiError(404, "not_found", f"no workflow item {item!r}")
    return view.json(Item.from_bytes(stored).public())


def _all_partitions() -> list[int]:
    return list(range(app.settings.partitions))


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _encode_cursor(partition: int, after: bytes | None) -> str:
    return base64.urlsafe_b64encode(codec.pack([partition, after])).decode()


def _decode_cursor(raw: str | None) -> tuple[int, bytes | None]:
    if not raw:
        return 0, None
    try:
        partition, after = codec.unpack(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, binascii.Error, TypeError):
        raise ApiError(400, "bad_request", "cursor is not one this API returned") from None
    if not isinstance(partition, int) or not 0 <= partition < app.settings.partitions:
        raise ApiError(400, "bad_request", "cursor is not one this API returned")
    if after is not None and not isinstance(after, bytes):
        raise ApiError(400, "bad_request", "cursor is not one this API returned")
    return partition, after
