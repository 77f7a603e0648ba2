"""The query API over HTTP: every endpoint of the workers, async (aiohttp) or sync (urllib).

Both clients share one description of the endpoints (:class:`_Endpoints`) and differ only in
how a request is made. Error answers become the typed exceptions of
:mod:`statekeeper.client.exceptions` (a 503 carries ``retry_after``).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

import aiohttp

from statekeeper.client.exceptions import ApiError, NotFound, Unavailable, error_for

R = TypeVar("R")
T = TypeVar("T")
Params = Mapping[str, Any] | None


class _Endpoints(Generic[R]):
    """Every endpoint as a method; ``_call`` (sync or async) performs the request."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, params: Params = None, body: Any = None) -> R:
        raise NotImplementedError

    # --- workflows ---------------------------------------------------------------------------
    def item(self, item: str) -> R:
        """``GET /v1/workflows/{item}``: where the item is now."""
        return self._call("GET", f"/v1/workflows/{_seg(item)}")

    def history(self, item: str) -> R:
        """``GET /v1/workflows/{item}/history``: ``{key, history}``, oldest first."""
        return self._call("GET", f"/v1/workflows/{_seg(item)}/history")

    def items(
        self,
        *,
        workflow: str | None = None,
        state: str | None = None,
        condition: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> R:
        """``GET /v1/workflows?…``: one page ``{items, next_cursor}``."""
        params = {"workflow": workflow, "state": state, "condition": condition}
        params.update({f"attr.{k}": _text(v) for k, v in (attrs or {}).items()})
        return self._call("GET", "/v1/workflows", {**params, "limit": limit, "cursor": cursor})

    def counts(self, workflow: str | None = None) -> R:
        """``GET /v1/workflows/counts``: items per state and condition, per workflow."""
        return self._call("GET", "/v1/workflows/counts", {"workflow": workflow})

    def stuck(self, workflow: str | None = None) -> R:
        """``GET /v1/workflows/stuck``: items longer in their state than its SLA."""
        return self._call("GET", "/v1/workflows/stuck", {"workflow": workflow})

    # --- sessions, conversations, resources ------------------------------------------------
    def session(self, session: str) -> R:
        """``GET /v1/sessions/{session}``: the live session."""
        return self._call("GET", f"/v1/sessions/{_seg(session)}")

    def messages(
        self,
        user: str,
        *,
        conversation: str | None = None,
        limit: int | None = None,
        before: int | None = None,
    ) -> R:
        """``GET /v1/conversations/{user}/messages``: a page of messages, newest last."""
        params = {"conversation": conversation, "limit": limit, "before": before}
        return self._call("GET", f"/v1/conversations/{_seg(user)}/messages", params)

    def context(
        self,
        user: str,
        budget_tokens: int,
        *,
        conversation: str | None = None,
        query: str | None = None,
    ) -> R:
        """``GET /v1/conversations/{user}/context``: what fits the token budget."""
        params = {"budget_tokens": budget_tokens, "conversation": conversation, "query": query}
        return self._call("GET", f"/v1/conversations/{_seg(user)}/context", params)

    def search(self, user: str, q: str, *, limit: int | None = None) -> R:
        """``GET /v1/conversations/{user}/search``: ranked matches over all conversations."""
        return self._call("GET", f"/v1/conversations/{_seg(user)}/search", {"q": q, "limit": limit})

    def resource(self, resource: str) -> R:
        """``GET /v1/resources/{resource}``: the live resource and its deadlines."""
        return self._call("GET", f"/v1/resources/{_seg(resource)}")

    def lifecycle_stats(self) -> R:
        """``GET /v1/lifecycle/stats``: live counts and bytes, expirations, purges."""
        return self._call("GET", "/v1/lifecycle/stats")

    # --- reports, events, operations ---------------------------------------------------------
    def reports(self) -> R:
        """``GET /v1/reports``: the reports and their parameters."""
        return self._call("GET", "/v1/reports")

    def report(self, name: str, **params: Any) -> R:
        """``GET /v1/reports/{name}?…``: ``{report, params, cache, age_s, result}``."""
        return self._call("GET", f"/v1/reports/{_seg(name)}", params)

    def post_events(self, events: list[dict[str, Any]] | dict[str, Any]) -> R:
        """``POST /v1/events``: ``{accepted, ids}`` once the broker acknowledged every one."""
        return self._call("POST", "/v1/events", body=events)

    def healthz(self) -> R:
        """``GET /healthz``."""
        return self._call("GET", "/healthz")

    def readyz(self) -> R:
        """``GET /readyz``: raises :class:`Unavailable` while the worker recovers."""
        return self._call("GET", "/readyz")

    def metrics(self) -> R:
        """``GET /metrics``: Prometheus text."""
        return self._call("GET", "/metrics")

    # --- shared request plumbing -------------------------------------------------------------
    def _target(self, path: str, params: Params) -> str:
        query = {k: _text(v) for k, v in (params or {}).items() if v is not None}
        return self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")

    def _headers(self, body: Any) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        return headers


class QueryClient(_Endpoints[Any]):
    """Blocking client (urllib): ``QueryClient(url, api_key).item("inv-1")``."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout_s: float = 30.0) -> None:
        super().__init__(url, api_key, timeout_s)

    def _call(self, method: str, path: str, params: Params = None, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._target(path, params), data=data, headers=self._headers(body), method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                return _decode(reply.read(), reply.headers.get("Content-Type"))
        except urllib.error.HTTPError as err:
            content = _decode(err.read(), err.headers.get("Content-Type"))
            raise error_for(err.code, content, err.headers.get("Retry-After")) from None
        except (urllib.error.URLError, OSError) as exc:
            raise Unavailable(0, "unreachable", f"{self.url}: {exc}") from None


class AsyncQueryClient(_Endpoints[Awaitable[Any]]):
    """asyncio client (aiohttp): ``async with AsyncQueryClient(url, key) as api: ...``."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout_s: float = 30.0) -> None:
        super().__init__(url, api_key, timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncQueryClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, params: Params = None, body: Any = None) -> Any:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        data = None if body is None else json.dumps(body)
        try:
            async with self._session.request(
                method, self._target(path, params), data=data, headers=self._headers(body)
            ) as reply:
                content = _decode(await reply.read(), reply.headers.get("Content-Type"))
                if reply.status >= 400:
                    raise error_for(reply.status, content, reply.headers.get("Retry-After"))
                return content
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise Unavailable(0, "unreachable", f"{self.url}: {exc!r}") from None


async def wait_until(
    fetch: Callable[[], Awaitable[T]],
    until: Callable[[T], bool] = lambda _: True,
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.2,
) -> T:
    """Poll ``fetch`` until its answer satisfies ``until``: read-your-writes after a send.

    404 and 503 answers count as "not yet"; the last one is raised when time runs out.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = await fetch()
            if until(answer):
                return answer
            last: Exception = TimeoutError(f"condition not met within {timeout_s}s")
        except (NotFound, Unavailable) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise last
        await asyncio.sleep(interval_s)


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return str(value)


def _decode(body: bytes, content_type: str | None) -> Any:
    if "json" in (content_type or ""):
        return json.loads(body)
    return body.decode(errors="replace")


__all__ = ["ApiError", "AsyncQueryClient", "QueryClient", "wait_until"]
