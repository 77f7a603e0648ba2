"""HTTP views of state management."""

from __future__ import annotations

from faust.web import Request, Response, View

from statekeeper.app import app
from statekeeper.stores.tables import workflow_items
from statekeeper.stores.workflow import Item
from statekeeper.web.api import ApiError, api_view, forward_to_owner, tenant_of


@app.page("/v1/workflows/{item}")
@api_view
async def get_item(view: View, request: Request, item: str) -> Response:
    """Where is this item now? Another tenant's item answers 404 like a missing one."""
    tenant = tenant_of(request)
    key = f"{tenant}/{item}".encode()
    forwarded = await forward_to_owner(view, request, workflow_items, key)
    if forwarded is not None:
        return forwarded
    stored = workflow_items.get(key)
    if stored is None:
        raise ApiError(404, "not_found", f"no workflow item {item!r}")
    return view.json(Item.from_bytes(stored).public())
