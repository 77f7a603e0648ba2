"""What every HTTP handler shares: the error shape, authentication, owner forwarding."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from faust.types import TableT
from faust.web import Request, Response, View
from yarl import URL

from statekeeper.agents.pipeline import murmur2_partition
from statekeeper.app import app
from statekeeper.settings import Grant
from statekeeper.stores.scan import owner_url
from statekeeper.web.auth import keyring_from
from statekeeper.web.freshness import (
    LAG_HEADER,
    OFFSET_HEADER,
    PARTITION_HEADER,
    answered_partition,
    freshness_headers,
)
from statekeeper.web.telemetry import observe_request

logger = logging.getLogger(__name__)

FORWARDED_HEADER = "X-Statekeeper-Forwarded"
OWNER_HEADER = "X-Statekeeper-Owner"  # the worker whose table answered
RETRY_AFTER_S = 2

keyring, generated_dev_key = keyring_from(app.settings)


class ApiError(Exception):
    """An HTTP error answered as ``{"error": {"code", "message"}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def not_ready() -> ApiError:
    return ApiError(
        503,
        "recovering",
        "tables are recovering; try again shortly",
        {"Retry-After": str(RETRY_AFTER_S)},
    )


def error_response(view: View, error: ApiError) -> Response:
    body = {"error": {"code": error.code, "message": error.message}}
    return view.json(body, status=error.status, headers=error.headers)


ViewFun = Callable[..., Awaitable[Response]]


def api_view(fun: ViewFun) -> ViewFun:
    """Turn :class:`ApiError` (and any bug) into the contract's JSON error shape."""

    route = fun.__qualname__

    @functools.wraps(fun)
    async def handler(view: View, request: Request, **kwargs: Any) -> Response:
        started = time.perf_counter()
        # aiohttp serves a keep-alive connection's requests in one task: start clean.
        answered_partition.set(None)
        try:
            response = await fun(view, request, **kwargs)
        except ApiError as error:
            response = error_response(view, error)
        except Exception:
            logger.exception("%s %s failed", request.method, request.url)
            response = error_response(view, ApiError(500, "internal", "internal error"))
        headers = response.headers  # type: ignore[attr-defined]
        headers.setdefault(OWNER_HEADER, str(app.conf.canonical_url))
        partition = answered_partition.get()
        if partition is not None:  # answered here from one partition: say how fresh it is
            for name, value in freshness_headers(request.url.path, partition).items():
                headers.setdefault(name, value)
        elapsed_ms = (time.perf_counter() - started) * 1000
        observe_request(route, request.method, response.status, elapsed_ms)  # type: ignore[attr-defined]
        return response

    return handler


def grant_of(request: Request) -> Grant:
    """What the request's API key may do; 401 without a known key."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <api key>")
    grant = keyring.grant_for(presented.strip())
    if grant is None:
        raise ApiError(401, "unauthorized", "unknown API key")
    return grant


def tenant_of(request: Request) -> str:
    """The tenant whose API key the request carries; 401 otherwise."""
    return grant_of(request).tenant


def require_writer(request: Request) -> None:
    """403 for a read-only key."""
    if grant_of(request).read_only:
        raise ApiError(403, "forbidden", "this API key is read-only")


async def forward_to_owner(
    view: View, request: Request, table: TableT, key: bytes
) -> Response | None:
    """Answer from the worker owning ``key``'s partition; None when that is this worker.

    A request that was already forwarded once is never forwarded again: if the
    assignment moved meanwhile, the answer is 503 with ``Retry-After`` rather than a hop.
    """
    if not app.is_ready():
        raise not_ready()
    partition = murmur2_partition(key, app.settings.partitions)
    url = owner_url(app, table, partition)
    if url is None:
        raise not_ready()
    owner = URL(url)
    if _same_url(owner, app.conf.canonical_url):
        answered_partition.set(partition)
        return None
    if request.headers.get(FORWARDED_HEADER):
        raise not_ready()
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    headers[FORWARDED_HEADER] = "1"
    target = request.url.with_host(owner.host or "127.0.0.1").with_port(owner.port)
    try:
        async with app.http_client.request(request.method, target, headers=headers) as reply:
            body = await reply.read()
            return view.bytes(
                body,
                content_type=reply.content_type,
                status=reply.status,
                headers={k: v for k, v in reply.headers.items() if k in _PASSED_HEADERS},
            )
    except OSError as exc:
        logger.warning("forwarding to %s failed: %s", owner, exc)
        raise not_ready() from None


_PASSED_HEADERS = (
    "Retry-After",
    "X-Cache",
    "Age",
    OWNER_HEADER,
    OFFSET_HEADER,
    LAG_HEADER,
    PARTITION_HEADER,
)


def _same_url(left: URL, right: Any) -> bool:
    b = right if isinstance(right, URL) else URL(str(right))
    return (left.host, left.port) == (b.host, b.port)
