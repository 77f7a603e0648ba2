"""``GET /dashboard``: the web dashboard, and the endpoints only it needs.

The page (``web/static/dashboard.*``) carries no data: it asks for an API key, keeps it in
the browser's ``localStorage`` and reads the ordinary ``/v1`` endpoints with it (counts,
failed items, stuck items, lifecycle stats), plus two made for it:

- ``GET /v1/dashboard/stream``: Server-Sent Events of the caller's tenant's status changes
  (``status``), a ``tick`` every ``STATEKEEPER_DASHBOARD_TICK_S`` telling the page to
  re-read its snapshot, and ``gap`` when changes were dropped for a slow reader. It needs
  the same ``Authorization`` header as every ``/v1`` endpoint, so the page reads it with
  ``fetch()`` rather than ``EventSource`` (which cannot send headers); the key never goes
  into a URL.
- ``GET /v1/dashboard/cache``: the Redis cache's outcomes summed over the workers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web as aiohttp_web
from aiokafka import AIOKafkaConsumer
from faust.web import Request, Response, View

from statekeeper.app import app
from statekeeper.connections import kafka_options
from statekeeper.metrics import metrics
from statekeeper.web.api import ApiError, api_view, error_response, tenant_of
from statekeeper.web.cluster import gather, local_query
from statekeeper.web.dashboard_feed import FeedClosed, StatusFeed, Subscription

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ASSETS = {  # the only files served: name -> content type
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
}
PAGE_HEADERS = {
    # The page holds an API key: no script, style or connection from anywhere else.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
CACHE_OUTCOMES = ("hits", "misses", "stale", "bypasses")


def _new_consumer() -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **kafka_options(app.settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        client_id=f"{app.settings.app_id}-dashboard-feed",
    )


feed = StatusFeed(_new_consumer, app.topic_names.workflow_status, app.settings.dashboard_queue_size)


async def _stop_feed(_: aiohttp_web.Application) -> None:
    await feed.stop()


# aiohttp calls on_shutdown before it waits for open requests: the streams end there.
app.web.web_app.on_shutdown.append(_stop_feed)  # type: ignore[attr-defined]


@app.page("/dashboard")
async def dashboard_page(view: View, request: Request) -> Response:
    """The dashboard's HTML; it carries no data (the data endpoints need an API key)."""
    return view.html(_read_static("dashboard.html"), headers=dict(PAGE_HEADERS))


@app.page("/dashboard/{asset}")
async def dashboard_asset(view: View, request: Request, asset: str) -> Response:
    """The page's script and style sheet (a fixed list; nothing else is served)."""
    if asset not in ASSETS:
        return view.json({"error": {"code": "not_found", "message": "no such asset"}}, status=404)
    body = _read_static(asset).encode()
    return view.bytes(body, content_type=ASSETS[asset], headers=dict(PAGE_HEADERS))


def _read_static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


@local_query("dashboard-cache")
async def _local_cache(tenant: str, partitions: list[int], params: Mapping[str, str]) -> Any:
    cache = metrics.cache
    counters = (cache.hits, cache.misses, cache.stale, cache.bypasses)
    return {
        **{name: sum(c.values()) for name, c in zip(CACHE_OUTCOMES, counters, strict=True)},
        "available": cache.available,
    }


@app.page("/v1/dashboard/cache")
@api_view
async def get_cache(view: View, request: Request) -> Response:
    """Cache outcomes since each worker started, summed over the workers owning partitions.

    These are worker-wide counters (the ones ``/metrics`` publishes), not per tenant.
    """
    tenant_of(request)
    shares = await gather(request, "dashboard-cache", list(range(app.settings.partitions)), {})
    totals = {name: sum(share[name] for share in shares) for name in CACHE_OUTCOMES}
    served = sum(totals.values())
    body = {
        **totals,
        "requests": served,
        "hit_rate": totals["hits"] / served if served else None,
        "available": all(share["available"] for share in shares),
        "workers": len(shares),
    }
    return view.json(body)


@app.page("/v1/dashboard/stream")
async def dashboard_stream(view: View, request: Request) -> Any:
    """Server-Sent Events: the tenant's status changes as they happen, and snapshot ticks."""
    try:
        tenant = tenant_of(request)
        subscription, recent = await feed.subscribe(tenant)
    except ApiError as error:
        return error_response(view, error)
    except FeedClosed as exc:
        unavailable = ApiError(503, "unavailable", str(exc), {"Retry-After": "2"})
        return error_response(view, unavailable)
    try:
        return await _stream(request, tenant, subscription, recent)
    finally:
        feed.unsubscribe(subscription)


async def _stream(
    request: Request, tenant: str, subscription: Subscription, recent: list[dict[str, Any]]
) -> aiohttp_web.StreamResponse:
    response = aiohttp_web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)  # type: ignore[arg-type]
    tick_s = app.settings.dashboard_tick_s
    try:
        await _send(response, "hello", {"tenant": tenant, "tick_s": tick_s, "ts": _now_ms()})
        for earlier in recent:
            await _send(response, "status", earlier)
        next_tick = time.monotonic() + tick_s
        while True:
            record = await subscription.next(max(0.0, next_tick - time.monotonic()))
            dropped = subscription.take_dropped()
            if dropped:
                await _send(response, "gap", {"dropped": dropped})
            if record is not None:
                await _send(response, "status", record)
            if time.monotonic() >= next_tick:  # ticks keep their pace however busy it is
                await _send(response, "tick", {"ts": _now_ms()})
                next_tick = time.monotonic() + tick_s
    except FeedClosed:
        pass  # the worker is stopping
    except ConnectionResetError:
        logger.debug("a dashboard stream of %s closed", tenant)
    return response


async def _send(response: aiohttp_web.StreamResponse, event: str, data: Any) -> None:
    payload = json.dumps(data, separators=(",", ":"), default=_jsonable)
    await response.write(f"event: {event}\ndata: {payload}\n\n".encode())


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON")


def _now_ms() -> int:
    return int(time.time() * 1000)
