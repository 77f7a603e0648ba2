"""Liveness, readiness and metrics."""

from __future__ import annotations

from faust.web import Request, Response, View

from statekeeper.app import app
from statekeeper.metrics import metrics
from statekeeper.web import telemetry
from statekeeper.web.api import RETRY_AFTER_S


@app.page("/healthz")
async def healthz(view: View, request: Request) -> Response:
    """Alive: the process answers."""
    return view.json({"status": "ok"})


@app.page("/readyz")
async def readyz(view: View, request: Request) -> Response:
    """Ready only once every assigned table partition has been recovered."""
    if app.is_ready():
        return view.json({"status": "ready"})
    body = {"error": {"code": "recovering", "message": "tables are recovering"}}
    return view.json(body, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})


@app.page("/metrics")
async def prometheus(view: View, request: Request) -> Response:
    """Counters in Prometheus text format."""
    ready = f"statekeeper_ready {1 if app.is_ready() else 0}\n"
    body = metrics.render() + telemetry.render() + ready
    return view.text(body, content_type="text/plain; version=0.0.4")
