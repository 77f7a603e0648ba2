"""HTTP view of session memory (contract section 3, ``GET /v1/sessions/{session}``)."""

from __future__ import annotations

from faust.web import Request, Response, View

from statekeeper.agents.clock import now_ms
from statekeeper.app import app
from statekeeper.stores.session import Session, due_reason, session_closed, session_live
from statekeeper.web.api import ApiError, api_view, forward_to_owner, tenant_of


@app.page("/v1/sessions/{session}")
@api_view
async def get_session(view: View, request: Request, session: str) -> Response:
    """The live session, from the worker owning it.

    A closed session, one past its deadline (even before the next tick has closed it) and
    another tenant's session all answer 404 exactly like a missing one.
    """
    key = f"{tenant_of(request)}/{session}".encode()
    forwarded = await forward_to_owner(view, request, session_live, key)
    if forwarded is not None:
        return forwarded
    stored = session_live.get(key)
    live = Session.from_bytes(stored) if stored is not None else None
    if live is None or key in session_closed or due_reason(live, now_ms()) is not None:
        raise ApiError(404, "not_found", f"no session {session!r}")
    return view.json(live.public())
